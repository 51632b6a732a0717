//! The frame reader fed arbitrary input, and frames written in arbitrary pieces: no panic,
//! nothing delivered that was not sent, and every stream that was sent arrives whole.

use proptest::prelude::*;
use sdm_relay::Framed;
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

fn block_on<F: Future>(work: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(work)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_read_as_frames_end_or_fail_cleanly(
        wire in proptest::collection::vec(any::<u8>(), 0..2000),
        window in 1usize..64,
    ) {
        let sent = wire.len();
        let (got, ended) = block_on(async {
            let (mut raw, far) = duplex(window);
            let mut reader = Framed::new(far);
            reader.start();
            let feed = async move {
                let _ = raw.write_all(&wire).await;
            };
            // Owns the reader, so that the feed stops when the reader gives up.
            let read = async move {
                let mut got = Vec::new();
                let _ = reader.read_to_end(&mut got).await;
                (got, reader.read_ended())
            };
            tokio::join!(feed, read).1
        });
        // Whatever came out was inside frames: never more than what was sent, less a header
        // per frame and the end frame if one was seen.
        let headers = if got.is_empty() { 0 } else { 4 };
        let end = if ended { 4 } else { 0 };
        prop_assert!(got.len() + headers + end <= sent);
    }

    #[test]
    fn streams_written_in_any_pieces_arrive_whole(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..12),
        window in 1usize..5000,
    ) {
        let sent: Vec<u8> = chunks.concat();
        let (got, finished) = block_on(async {
            let (near, far) = duplex(window);
            let (mut writer, mut reader) = (Framed::new(near), Framed::new(far));
            writer.start_writing();
            reader.start_reading();
            let write = async {
                for chunk in &chunks {
                    writer.write_all(chunk).await.expect("write");
                }
                writer.shutdown().await.expect("end");
            };
            let read = async {
                let mut got = Vec::new();
                reader.read_to_end(&mut got).await.expect("read");
                got
            };
            let ((), got) = tokio::join!(write, read);
            (got, reader.read_ended())
        });
        prop_assert!(finished, "the end frame did not arrive");
        prop_assert_eq!(got, sent);
    }
}
