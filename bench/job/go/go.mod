module github.com/sdm-dev/sdm/bench/job/go

go 1.25.0

require (
	github.com/jackc/pgx/v5 v5.13.0
	github.com/sdm-dev/sdm/go/sdm v0.0.0
)

require (
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.3 // indirect
	golang.org/x/sync v0.22.0 // indirect
	golang.org/x/text v0.41.0 // indirect
)

// The job uses the module of this checkout.
replace github.com/sdm-dev/sdm/go/sdm => ../../../go/sdm
