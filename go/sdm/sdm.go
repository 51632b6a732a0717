// Package sdm opens tunnels to databases and servers with an sdm service account token. It is
// a thin cgo wrapper over libsdm (the C interface of the Rust client library, include/sdm.h):
// every call blocks the calling goroutine while libsdm's own threads do the network work.
//
//	session, err := sdm.Login(token)               // or sdm.LoginFromEnv()
//	if err != nil { ... }
//	defer session.Close()
//	tunnel, err := session.Connect("pgsql")         // exact name or unique substring
//	if err != nil { ... }
//	defer tunnel.Close()
//	db, err := sql.Open("pgx", "host="+tunnel.Host()+" port="+strconv.Itoa(tunnel.Port())+" ...")
//
// Sessions and tunnels are safe for concurrent use. Errors are *Error values with a Kind;
// errors.Is(err, sdm.ErrAmbiguousResource) and errors.As work.
package sdm

// libsdm and its header come from pkg-config (sdm.pc, installed with the library by
// scripts/install-libsdm.sh --prefix PREFIX; set PKG_CONFIG_PATH=PREFIX/lib/pkgconfig when
// PREFIX is not a default location, and an rpath or LD_LIBRARY_PATH for the loader).

/*
#cgo pkg-config: sdm
#include <stdlib.h>
#include <sdm.h>
*/
import "C"

import (
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
	"unsafe"
)

// Version is the version of the loaded libsdm, e.g. "0.1.0".
func Version() string { return C.GoString(C.sdm_version()) }

// Options configures LoginWithOptions.
type Options struct {
	// Token is the service account token; empty means SDM_ADMIN_TOKEN, else SDM_SERVICE_TOKEN.
	Token string
	// APIURL overrides the control plane URL the token carries (default: SDM_API_URL, else the
	// token's). The CA pinned by the token still applies.
	APIURL string
	// Labels are recorded with the session and every connection (e.g. dag_id, task_id).
	Labels map[string]string
	// Timeout limits each control plane call (0: 30 s).
	Timeout time.Duration
	// WarmConnections is how many gateway connections each tunnel keeps ready (0: the default
	// of 2; negative: none).
	WarmConnections int
}

// Session is a logged-in service account. Close it when done: that closes its tunnels.
type Session struct {
	mu      sync.RWMutex // write-held only by Close; read-held by every call into libsdm
	ptr     *C.sdm_session
	account string
	id      string
}

// Login logs in with a service account token; everything else comes from the token.
func Login(token string) (*Session, error) {
	return LoginWithOptions(Options{Token: token})
}

// LoginFromEnv logs in with the token in SDM_ADMIN_TOKEN, else SDM_SERVICE_TOKEN.
func LoginFromEnv() (*Session, error) {
	return LoginWithOptions(Options{})
}

// LoginWithOptions logs in with options (token, API URL override, labels, timeout).
func LoginWithOptions(opts Options) (*Session, error) {
	var copts *C.sdm_options
	if status := C.sdm_options_new(&copts); status != C.SDM_STATUS_OK {
		return nil, fromC(status, nil)
	}
	defer C.sdm_options_free(copts)
	set := func(apply func() C.sdm_status) error {
		if status := apply(); status != C.SDM_STATUS_OK {
			return fromC(status, nil)
		}
		return nil
	}
	if opts.Token != "" {
		ctoken := C.CString(opts.Token)
		defer C.free(unsafe.Pointer(ctoken))
		if err := set(func() C.sdm_status { return C.sdm_options_set_token(copts, ctoken) }); err != nil {
			return nil, err
		}
	}
	if opts.APIURL != "" {
		curl := C.CString(opts.APIURL)
		defer C.free(unsafe.Pointer(curl))
		if err := set(func() C.sdm_status { return C.sdm_options_set_api_url(copts, curl) }); err != nil {
			return nil, err
		}
	}
	for k, v := range opts.Labels {
		ck, cv := C.CString(k), C.CString(v)
		status := C.sdm_options_add_label(copts, ck, cv)
		C.free(unsafe.Pointer(ck))
		C.free(unsafe.Pointer(cv))
		if status != C.SDM_STATUS_OK {
			return nil, fromC(status, nil)
		}
	}
	if opts.Timeout != 0 {
		ms := opts.Timeout.Milliseconds()
		if ms <= 0 {
			return nil, &Error{Kind: KindInvalidArgument, Code: int(KindInvalidArgument),
				Message: "Timeout must be at least 1 ms"}
		}
		if err := set(func() C.sdm_status { return C.sdm_options_set_timeout_ms(copts, C.uint64_t(ms)) }); err != nil {
			return nil, err
		}
	}
	if opts.WarmConnections != 0 {
		n := max(opts.WarmConnections, 0)
		if err := set(func() C.sdm_status { return C.sdm_options_set_warm_connections(copts, C.size_t(n)) }); err != nil {
			return nil, err
		}
	}

	var ptr *C.sdm_session
	var cerr *C.sdm_error
	if status := C.sdm_login_with_options(copts, &ptr, &cerr); status != C.SDM_STATUS_OK {
		return nil, fromC(status, cerr)
	}
	s := &Session{ptr: ptr}
	var text *C.char
	if C.sdm_session_account_name(ptr, &text) == C.SDM_STATUS_OK {
		s.account = C.GoString(text)
	}
	if C.sdm_session_id(ptr, &text) == C.SDM_STATUS_OK {
		s.id = C.GoString(text)
	}
	// A safety net: a Session nobody closed is freed by the garbage collector (tunnels keep
	// their session reachable, so this never closes a tunnel still in use).
	runtime.SetFinalizer(s, (*Session).Close)
	return s, nil
}

// Account is the name of the account logged in.
func (s *Session) Account() string { return s.account }

// ID is the session id that audit records carry.
func (s *Session) ID() string { return s.id }

// use runs f with the live handle, or fails with ErrClosed after Close.
func (s *Session) use(f func(*C.sdm_session) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.ptr == nil {
		return closedError("the session")
	}
	return f(s.ptr)
}

// Resource is a resource granted to the account.
type Resource struct {
	ID      string
	Name    string
	Kind    string // postgres, mysql, redis, ssh, tcp, or a newer kind's name
	Tags    map[string]string
	Port    int // the fixed local port tunnels use, 0 when none
	Healthy bool
	// SSHHostKey is the host key the gateway presents for an ssh resource ("ssh-ed25519
	// AAAA…"), the same on every gateway: pin it for the tunnel's address. Empty for other
	// kinds.
	SSHHostKey string
}

// ListResources returns the resources granted to the account, sorted by name.
func (s *Session) ListResources() ([]Resource, error) {
	var out []Resource
	err := s.use(func(p *C.sdm_session) error {
		var list *C.sdm_resource_list
		var cerr *C.sdm_error
		if status := C.sdm_session_list_resources(p, &list, &cerr); status != C.SDM_STATUS_OK {
			return fromC(status, cerr)
		}
		defer C.sdm_resource_list_free(list)
		n := C.sdm_resource_list_len(list)
		out = make([]Resource, 0, int(n))
		for i := C.size_t(0); i < n; i++ {
			var id, name, kind, hostKey *C.char
			var port C.uint16_t
			var healthy C.bool
			var tags C.size_t
			for _, status := range []C.sdm_status{
				C.sdm_resource_list_id(list, i, &id),
				C.sdm_resource_list_name(list, i, &name),
				C.sdm_resource_list_kind(list, i, &kind),
				C.sdm_resource_list_port(list, i, &port),
				C.sdm_resource_list_healthy(list, i, &healthy),
				C.sdm_resource_list_tag_count(list, i, &tags),
				C.sdm_resource_list_ssh_host_key(list, i, &hostKey),
			} {
				if status != C.SDM_STATUS_OK {
					return fromC(status, nil)
				}
			}
			r := Resource{
				ID: C.GoString(id), Name: C.GoString(name), Kind: C.GoString(kind),
				Port: int(port), Healthy: bool(healthy), Tags: map[string]string{},
			}
			if hostKey != nil {
				r.SSHHostKey = C.GoString(hostKey)
			}
			for j := C.size_t(0); j < tags; j++ {
				var k, v *C.char
				if status := C.sdm_resource_list_tag(list, i, j, &k, &v); status != C.SDM_STATUS_OK {
					return fromC(status, nil)
				}
				r.Tags[C.GoString(k)] = C.GoString(v)
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// ConnectOptions configures ConnectWith. The zero value is what Connect uses: TCP on
// 127.0.0.1, and every local OS user may connect (SameUserOnly costs a question to the kernel
// about each local connection's peer socket, so it is asked for, not the default).
type ConnectOptions struct {
	// Bind is the local IP address to listen on; empty means 127.0.0.1. Anything but loopback
	// exposes the resource to other machines.
	Bind string
	// Port is the local port; 0 means the resource's fixed port, else a free one.
	Port int
	// SameUserOnly refuses local connections from other OS users (Linux): a refused
	// PostgreSQL client reads why as a server error, and libsdm logs the refusal.
	SameUserOnly bool
	// UnixSocket listens on a Unix socket at this path instead of TCP (mode 0600; its
	// directory is created 0700, and one that other users can reach is refused).
	UnixSocket string
	// PrivateUnixSocket listens on a Unix socket at a path sdm picks: a new 0700 directory
	// under $XDG_RUNTIME_DIR/sdm (else sdm-UID in the temporary directory), removed with the
	// tunnel. A postgres resource's socket is named .s.PGSQL.5432 there, so libpq and pgx take
	// filepath.Dir(tunnel.Addr()) as host and 5432 as port. UnixSocket takes precedence.
	PrivateUnixSocket bool
}

// Connect opens a tunnel to the resource name (an exact name, else a unique substring): a
// listener on 127.0.0.1 that any driver can connect to.
func (s *Session) Connect(name string) (*Tunnel, error) {
	return s.ConnectWith(name, ConnectOptions{})
}

// ConnectWith is Connect with a chosen local address or port.
func (s *Session) ConnectWith(name string, opts ConnectOptions) (*Tunnel, error) {
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, &Error{Kind: KindInvalidArgument, Code: int(KindInvalidArgument),
			Message: "port " + strconv.Itoa(opts.Port) + " is out of range"}
	}
	copts, err := opts.toC()
	if err != nil {
		return nil, err
	}
	defer C.sdm_connect_options_free(copts)
	var t *Tunnel
	err = s.use(func(p *C.sdm_session) error {
		cname := C.CString(name)
		defer C.free(unsafe.Pointer(cname))
		var ptr *C.sdm_tunnel
		var cerr *C.sdm_error
		status := C.sdm_session_connect_with_options(p, cname, copts, &ptr, &cerr)
		if status != C.SDM_STATUS_OK {
			return fromC(status, cerr)
		}
		var err error
		if t, err = newTunnel(s, ptr); err != nil {
			C.sdm_tunnel_free(ptr)
			return err
		}
		return nil
	})
	return t, err
}

// toC builds the libsdm connect options; the caller frees them.
func (opts ConnectOptions) toC() (*C.sdm_connect_options, error) {
	var copts *C.sdm_connect_options
	if status := C.sdm_connect_options_new(&copts); status != C.SDM_STATUS_OK {
		return nil, fromC(status, nil)
	}
	fail := func(status C.sdm_status, message string) (*C.sdm_connect_options, error) {
		C.sdm_connect_options_free(copts)
		k := Kind(status)
		return nil, &Error{Kind: k, Code: int(k), Message: message}
	}
	C.sdm_connect_options_set_port(copts, C.uint16_t(opts.Port))
	C.sdm_connect_options_set_same_user_only(copts, C.bool(opts.SameUserOnly))
	C.sdm_connect_options_set_private_unix_socket(copts, C.bool(opts.PrivateUnixSocket))
	if opts.Bind != "" {
		cbind := C.CString(opts.Bind)
		status := C.sdm_connect_options_set_bind_address(copts, cbind)
		C.free(unsafe.Pointer(cbind))
		if status != C.SDM_STATUS_OK {
			return fail(status, "Bind "+strconv.Quote(opts.Bind)+
				" is not an IP address (e.g. \"127.0.0.1\" or \"::1\")")
		}
	}
	if opts.UnixSocket != "" {
		cpath := C.CString(opts.UnixSocket)
		status := C.sdm_connect_options_set_unix_socket(copts, cpath)
		C.free(unsafe.Pointer(cpath))
		if status != C.SDM_STATUS_OK {
			return fail(status, "UnixSocket "+strconv.Quote(opts.UnixSocket)+" is not a usable path")
		}
	}
	return copts, nil
}

// Dial connects to the resource name inside this process, without a local listener, and
// returns the connection: speak the resource's own protocol on it (for example as a pgx
// DialFunc). It stays open until closed, also after the session is closed.
func (s *Session) Dial(name string) (net.Conn, error) {
	var conn net.Conn
	err := s.use(func(p *C.sdm_session) error {
		cname := C.CString(name)
		defer C.free(unsafe.Pointer(cname))
		var fd C.int
		var cerr *C.sdm_error
		if status := C.sdm_session_dial(p, cname, &fd, &cerr); status != C.SDM_STATUS_OK {
			return fromC(status, cerr)
		}
		// net.FileConn duplicates the descriptor; the *os.File closes the original.
		f := os.NewFile(uintptr(fd), "sdm:"+name)
		defer f.Close()
		var err error
		conn, err = net.FileConn(f)
		return err
	})
	return conn, err
}

// Status is what `sdm status` shows.
type Status struct {
	Account   string
	Resources []ResourceStatus
	// Text is the table `sdm status` prints.
	Text string
}

// ResourceStatus is one granted resource and this session's tunnel to it, if any.
type ResourceStatus struct {
	Name        string
	Kind        string
	Connected   bool
	LocalAddr   string // "127.0.0.1:40001" (or a Unix socket's path) when connected
	Port        int    // the tunnel's TCP port, else the fixed port, else 0
	Connections int    // local connections being carried
}

// Status reads every granted resource and whether this session has a tunnel open to it.
func (s *Session) Status() (*Status, error) {
	var st *Status
	err := s.use(func(p *C.sdm_session) error {
		var report *C.sdm_status_report
		var cerr *C.sdm_error
		if status := C.sdm_session_status(p, &report, &cerr); status != C.SDM_STATUS_OK {
			return fromC(status, cerr)
		}
		defer C.sdm_status_report_free(report)
		var account, text *C.char
		C.sdm_status_report_account(report, &account)
		C.sdm_status_report_text(report, &text)
		st = &Status{Account: C.GoString(account), Text: C.GoString(text)}
		for i := C.size_t(0); i < C.sdm_status_report_len(report); i++ {
			var name, kind, addr *C.char
			var connected C.bool
			var port C.uint16_t
			var conns C.size_t
			for _, status := range []C.sdm_status{
				C.sdm_status_report_name(report, i, &name),
				C.sdm_status_report_kind(report, i, &kind),
				C.sdm_status_report_connected(report, i, &connected),
				C.sdm_status_report_local_addr(report, i, &addr),
				C.sdm_status_report_port(report, i, &port),
				C.sdm_status_report_connections(report, i, &conns),
			} {
				if status != C.SDM_STATUS_OK {
					return fromC(status, nil)
				}
			}
			rs := ResourceStatus{
				Name: C.GoString(name), Kind: C.GoString(kind), Connected: bool(connected),
				Port: int(port), Connections: int(conns),
			}
			if addr != nil {
				rs.LocalAddr = C.GoString(addr)
			}
			st.Resources = append(st.Resources, rs)
		}
		return nil
	})
	return st, err
}

// Disconnect closes this session's tunnels to the resource name (exact name or unique
// substring among the connected resources).
func (s *Session) Disconnect(name string) error {
	return s.use(func(p *C.sdm_session) error {
		cname := C.CString(name)
		defer C.free(unsafe.Pointer(cname))
		var cerr *C.sdm_error
		if status := C.sdm_session_disconnect(p, cname, &cerr); status != C.SDM_STATUS_OK {
			return fromC(status, cerr)
		}
		return nil
	})
}

// DisconnectAll closes every tunnel of this session; the session stays logged in.
func (s *Session) DisconnectAll() error {
	return s.use(func(p *C.sdm_session) error {
		var cerr *C.sdm_error
		if status := C.sdm_session_disconnect_all(p, &cerr); status != C.SDM_STATUS_OK {
			return fromC(status, cerr)
		}
		return nil
	})
}

// Logout closes every tunnel and ends the session on the control plane. Later calls fail with
// ErrClosed; Close is still needed to release the session.
func (s *Session) Logout() error {
	return s.use(func(p *C.sdm_session) error {
		var cerr *C.sdm_error
		if status := C.sdm_session_logout(p, &cerr); status != C.SDM_STATUS_OK {
			return fromC(status, cerr)
		}
		return nil
	})
}

// Close releases the session and closes its tunnels (their methods then report ErrClosed).
// It does not log out: call Logout first to end the session on the control plane. Closing
// again does nothing.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr != nil {
		C.sdm_session_free(s.ptr)
		s.ptr = nil
		runtime.SetFinalizer(s, nil)
	}
	return nil
}

// Tunnel is an open tunnel: point any client at LocalAddr (or Addr, or Host and Port).
type Tunnel struct {
	mu       sync.RWMutex // write-held only by Close
	ptr      *C.sdm_tunnel
	session  *Session // keeps the session (and so the tunnel) alive while the tunnel is used
	local    net.Addr
	resource string
}

func newTunnel(s *Session, ptr *C.sdm_tunnel) (*Tunnel, error) {
	t := &Tunnel{ptr: ptr, session: s}
	var cerr *C.sdm_error
	var needed C.size_t
	// Ask for the size first: a socket path can be long.
	status := C.sdm_tunnel_local_addr(ptr, nil, 0, &needed, &cerr)
	if status != C.SDM_STATUS_BUFFER_TOO_SMALL {
		return nil, fromC(status, cerr)
	}
	buf := make([]C.char, needed)
	if status := C.sdm_tunnel_local_addr(ptr, &buf[0], needed, nil, &cerr); status != C.SDM_STATUS_OK {
		return nil, fromC(status, cerr)
	}
	addr := C.GoString(&buf[0])
	var kind C.sdm_addr_kind
	if status := C.sdm_tunnel_local_addr_kind(ptr, &kind); status != C.SDM_STATUS_OK {
		return nil, fromC(status, nil)
	}
	if kind == C.SDM_ADDR_KIND_UNIX {
		t.local = &net.UnixAddr{Name: addr, Net: "unix"}
	} else {
		tcp, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			return nil, &Error{Kind: KindInternal, Code: int(KindInternal),
				Message: "libsdm gave a tunnel address that is not host:port: " + addr}
		}
		t.local = tcp
	}
	var name *C.char
	if C.sdm_tunnel_resource_name(ptr, &name) == C.SDM_STATUS_OK {
		t.resource = C.GoString(name)
	}
	runtime.SetFinalizer(t, (*Tunnel).Close)
	return t, nil
}

// LocalAddr is where clients connect: a *net.TCPAddr (Network() "tcp"), or a *net.UnixAddr
// (Network() "unix") for a tunnel opened with UnixSocket or PrivateUnixSocket. Pass both
// parts to net.Dial(addr.Network(), addr.String()).
func (t *Tunnel) LocalAddr() net.Addr { return t.local }

// Addr is where clients connect as text: "127.0.0.1:40001", or a Unix socket's path.
func (t *Tunnel) Addr() string { return t.local.String() }

// Host is the local IP address as text, e.g. "127.0.0.1"; "" for a Unix socket.
func (t *Tunnel) Host() string {
	if tcp, ok := t.local.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	return ""
}

// Port is the local TCP port; 0 for a Unix socket.
func (t *Tunnel) Port() int {
	if tcp, ok := t.local.(*net.TCPAddr); ok {
		return tcp.Port
	}
	return 0
}

// Resource is the name of the resource the tunnel reaches.
func (t *Tunnel) Resource() string { return t.resource }

// IsOpen reports whether the tunnel still accepts connections.
func (t *Tunnel) IsOpen() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var open C.bool
	return t.ptr != nil && C.sdm_tunnel_is_open(t.ptr, &open) == C.SDM_STATUS_OK && bool(open)
}

// CloseReason is why the tunnel closed when something other than its owner closed it (for
// example ErrUnauthenticated after the account was suspended), else nil.
func (t *Tunnel) CloseReason() error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.ptr == nil {
		return nil
	}
	var reason *C.sdm_error
	if C.sdm_tunnel_close_reason(t.ptr, &reason) != C.SDM_STATUS_OK || reason == nil {
		return nil
	}
	return fromC(C.sdm_error_code(reason), reason)
}

// Close stops the tunnel, closes its connections and releases it; the port is free when it
// returns. Closing again does nothing.
func (t *Tunnel) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ptr == nil {
		return nil
	}
	var cerr *C.sdm_error
	status := C.sdm_tunnel_close(t.ptr, &cerr)
	C.sdm_tunnel_free(t.ptr)
	t.ptr = nil
	runtime.SetFinalizer(t, nil)
	if status != C.SDM_STATUS_OK {
		return fromC(status, cerr)
	}
	return nil
}
