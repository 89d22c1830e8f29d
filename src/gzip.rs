//! gzip-compressed keys: a key whose bytes start with the gzip magic
//! (`1f 8b`) is decompressed before it is parsed. A ConfigMap holds at most
//! 1 MiB, so large configs ship compressed (the Prometheus operator's
//! `prometheus.yaml.gz`); the format is told from the name without its
//! `.gz` ([`Format::from_key`](crate::Format::from_key)).
//!
//! The magic bytes decide, not the name: `config.yaml.gz` holding plain
//! YAML is parsed as it is, and gzip bytes under any name are decompressed.
//!
//! Decompression is capped ([`DEFAULT_MAX_DECOMPRESSED`] unless told
//! otherwise): output stops one byte past the cap, so a gzip bomb (a
//! kilobyte that inflates to gigabytes) is refused after at most that
//! much work and memory, naming the key and the cap. Concatenated gzip
//! members are read as one stream, as `gzip -d` and Go's `gzip.Reader` do.
//!
//! Without the cargo feature `gzip`, a gzip key is a clear error saying how
//! to enable it, rather than a baffling parse error on binary bytes.

use std::borrow::Cow;

use crate::{Error, Result};

/// The two bytes every gzip stream starts with (RFC 1952).
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The default cap on a key's decompressed size: the volume reader's
/// default cap on a file ([`DEFAULT_MAX_FILE_SIZE`](crate::volume::DEFAULT_MAX_FILE_SIZE)),
/// so a compressed key may hold what an uncompressed one could.
pub const DEFAULT_MAX_DECOMPRESSED: u64 = crate::volume::DEFAULT_MAX_FILE_SIZE;

/// Whether `bytes` start with the gzip magic.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// `bytes` decompressed if they are gzip ([`is_gzip`]), else borrowed as
/// they are. `key` names the key in errors; more than `max` decompressed
/// bytes is refused ([`Error::Refused`]), as is a corrupt stream.
pub fn decompress_if_gzip<'a>(key: &str, bytes: &'a [u8], max: u64) -> Result<Cow<'a, [u8]>> {
    if is_gzip(bytes) {
        decompress(key, bytes, max).map(Cow::Owned)
    } else {
        Ok(Cow::Borrowed(bytes))
    }
}

/// Decompresses the gzip stream `bytes` (the content of `key`), refusing
/// more than `max` bytes of output or a corrupt stream.
#[cfg(feature = "gzip")]
pub fn decompress(key: &str, bytes: &[u8], max: u64) -> Result<Vec<u8>> {
    use std::io::Read;

    let mut out = Vec::new();
    // One byte past the cap tells "exactly max" from "more than max"
    // without inflating the rest.
    let read = flate2::read::MultiGzDecoder::new(bytes)
        .take(max.saturating_add(1))
        .read_to_end(&mut out);
    match read {
        Err(e) => Err(Error::Refused {
            key: key.to_owned(),
            reason: format!("starts with the gzip magic (1f 8b) but is not valid gzip: {e}"),
        }),
        Ok(n) if n as u64 > max => Err(Error::Refused {
            key: key.to_owned(),
            reason: format!(
                "gzip content ({} compressed) decompresses to more than {} (the cap on a \
                 decompressed key; refused as a possible gzip bomb)",
                size(bytes.len() as u64),
                size(max)
            ),
        }),
        Ok(_) => Ok(out),
    }
}

/// Without the `gzip` feature: a clear error naming the feature.
#[cfg(not(feature = "gzip"))]
pub fn decompress(key: &str, bytes: &[u8], max: u64) -> Result<Vec<u8>> {
    let _ = (bytes, max);
    Err(Error::Format {
        key: key.to_owned(),
        reason: "is gzip-compressed (starts with 1f 8b) and gzip support is not built in \
                 (enable the configmapwatch cargo feature \"gzip\")"
            .into(),
    })
}

/// `16 MiB`, `1 KiB`, `300 bytes`: for messages.
#[cfg(feature = "gzip")]
fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

#[cfg(all(test, feature = "gzip"))]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::{
        io::Write,
        time::{Duration, Instant},
    };

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn plain_bytes_are_borrowed_untouched() {
        let got = decompress_if_gzip("a.json", b"{}", 10).unwrap();
        assert!(matches!(got, Cow::Borrowed(b"{}")));
    }

    #[test]
    fn gzip_bytes_are_decompressed() {
        let compressed = gz(b"{\"a\": 1}");
        let got = decompress_if_gzip("a.json.gz", &compressed, 100).unwrap();
        assert_eq!(&*got, b"{\"a\": 1}");
    }

    #[test]
    fn exactly_the_cap_passes_one_more_byte_is_refused() {
        let data = vec![b'x'; 1000];
        assert_eq!(decompress("k", &gz(&data), 1000).unwrap(), data);
        let err = decompress("k", &gz(&data), 999).unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "{err:?}");
        assert!(err.to_string().contains("more than 999 bytes"), "{err}");
    }

    #[test]
    fn concatenated_members_are_one_stream() {
        let mut both = gz(b"hello ");
        both.extend(gz(b"world"));
        assert_eq!(decompress("k", &both, 100).unwrap(), b"hello world");
    }

    #[test]
    fn corrupt_gzip_is_refused_naming_the_key() {
        let mut bytes = gz(b"some config that is long enough to corrupt");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        bytes.truncate(bytes.len() - 4);
        let err = decompress("app.yaml.gz", &bytes, 1 << 20).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("key app.yaml.gz: "), "{text}");
        assert!(text.contains("not valid gzip"), "{text}");
    }

    /// A gzip bomb: 1 GiB of zeros, as 1024 concatenated members of 1 MiB
    /// each (about 1 MiB compressed; compressing 1 GiB in one go would make
    /// the test itself slow). Refused at the default 16 MiB cap, fast.
    fn bomb() -> Vec<u8> {
        let member = gz(&vec![0u8; 1 << 20]);
        member.repeat(1024)
    }

    #[test]
    fn a_gzip_bomb_is_refused_fast() {
        let bomb = bomb();
        assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
        let start = Instant::now();
        let err = decompress("prometheus.yaml.gz", &bomb, DEFAULT_MAX_DECOMPRESSED).unwrap_err();
        let took = start.elapsed();
        let text = err.to_string();
        assert!(text.contains("decompresses to more than 16 MiB"), "{text}");
        assert!(text.contains("gzip bomb"), "{text}");
        // Inflating 16 MiB, not 1 GiB: well under a second optimised, a
        // few in a debug build.
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }
}

#[cfg(all(test, not(feature = "gzip")))]
mod tests_without_the_feature {
    use super::*;

    #[test]
    fn a_gzip_key_names_the_missing_feature() {
        let err = decompress_if_gzip("p.yaml.gz", &[0x1f, 0x8b, 8, 0], 100).unwrap_err();
        assert!(err.to_string().contains("feature \"gzip\""), "{err}");
        assert!(decompress_if_gzip("p.yaml", b"a: 1", 100).is_ok());
    }
}
