use std::io;

use super::{Decoder, Encoder};

/// Decompress from the given source as if using a `Decoder`.
///
/// The input data must be in the zstd frame format.
pub fn decode_all<R: io::Read>(mut source: R) -> io::Result<Vec<u8>> {
    // Confab's patch: a frame whose header gives its size (every page sled reads back) is
    // decompressed in one call with this thread's context, instead of through a stream
    // decoder with its own context and 128 KiB buffers per call.
    const BULK_LIMIT: u64 = 64 << 20;
    thread_local! {
        static DECOMPRESSOR: std::cell::RefCell<crate::block::Decompressor> =
            std::cell::RefCell::new(crate::block::Decompressor::new());
    }
    let mut input = Vec::new();
    source.read_to_end(&mut input)?;
    // Unknown and error sizes are the largest u64 values.
    let size = zstd_safe::get_frame_content_size(&input);
    if size <= BULK_LIMIT {
        let bulk = DECOMPRESSOR.with(|d| match d.try_borrow_mut() {
            Ok(mut d) => d.decompress(&input, size as usize),
            Err(_) => crate::block::Decompressor::new().decompress(&input, size as usize),
        });
        // Several frames do not fit the first one's size: the stream below reads them all.
        if let Ok(out) = bulk {
            if out.len() as u64 == size {
                return Ok(out);
            }
        }
    }
    let mut result = Vec::new();
    copy_decode(&input[..], &mut result)?;
    Ok(result)
}

/// Decompress from the given source as if using a `Decoder`.
///
/// Decompressed data will be appended to `destination`.
pub fn copy_decode<R, W>(source: R, mut destination: W) -> io::Result<()>
where
    R: io::Read,
    W: io::Write,
{
    let mut decoder = Decoder::new(source)?;
    io::copy(&mut decoder, &mut destination)?;
    Ok(())
}

/// Compress all data from the given source as if using an `Encoder`.
///
/// Result will be in the zstd frame format.
///
/// A level of `0` uses zstd's default (currently `3`).
pub fn encode_all<R: io::Read>(source: R, level: i32) -> io::Result<Vec<u8>> {
    let mut result = Vec::<u8>::new();
    copy_encode(source, &mut result, level)?;
    Ok(result)
}

/// Compress all data from the given source as if using an `Encoder`.
///
/// Compressed data will be appended to `destination`.
///
/// A level of `0` uses zstd's default (currently `3`).
pub fn copy_encode<R, W>(
    mut source: R,
    destination: W,
    level: i32,
) -> io::Result<()>
where
    R: io::Read,
    W: io::Write,
{
    let mut encoder = Encoder::new(destination, level)?;
    io::copy(&mut source, &mut encoder)?;
    encoder.finish()?;
    Ok(())
}

#[cfg(tests)]
mod tests {}
