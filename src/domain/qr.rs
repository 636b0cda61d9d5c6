//! QR code renderings of a pairing code: SVG, and a 1-bit PNG written by hand (stored
//! deflate blocks), so no image library enters the build.

use qrcode::QrCode;
use qrcode::render::svg;

use crate::error::{Error, Result};

fn code(data: &str) -> Result<QrCode> {
    QrCode::new(data.as_bytes()).map_err(|e| Error::Internal(format!("QR encoding failed: {e}")))
}

pub fn svg(data: &str) -> Result<String> {
    Ok(code(data)?
        .render::<svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

/// Pixels per module and quiet-zone width in modules.
const SCALE: usize = 8;
const QUIET: usize = 4;

pub fn png(data: &str) -> Result<Vec<u8>> {
    let qr = code(data)?;
    let width = qr.width();
    let colors = qr.to_colors();
    let side = (width + 2 * QUIET) * SCALE;
    let row_bytes = side.div_ceil(8);
    let mut raw = Vec::with_capacity((row_bytes + 1) * side);
    for y in 0..side {
        raw.push(0); // filter: none
        let my = (y / SCALE).checked_sub(QUIET);
        let mut row = vec![0xFFu8; row_bytes]; // 1 = white
        for x in 0..side {
            let dark = match (my, (x / SCALE).checked_sub(QUIET)) {
                (Some(my), Some(mx)) if my < width && mx < width => {
                    colors[my * width + mx] == qrcode::Color::Dark
                }
                _ => false,
            };
            if dark {
                row[x / 8] &= !(0x80 >> (x % 8));
            }
        }
        raw.extend_from_slice(&row);
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(side as u32).to_be_bytes());
    ihdr.extend_from_slice(&(side as u32).to_be_bytes());
    ihdr.extend_from_slice(&[1, 0, 0, 0, 0]); // 1-bit grayscale, deflate, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = Crc32::default();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finish().to_be_bytes());
}

/// zlib stream of uncompressed deflate blocks (at most 65535 bytes each).
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(65_535).collect()
    };
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

struct Crc32(u32);

impl Default for Crc32 {
    fn default() -> Self {
        Crc32(0xFFFF_FFFF)
    }
}

impl Crc32 {
    fn update(&mut self, data: &[u8]) {
        for &byte in data {
            self.0 ^= u32::from(byte);
            for _ in 0..8 {
                self.0 = if self.0 & 1 == 1 {
                    (self.0 >> 1) ^ 0xEDB8_8320
                } else {
                    self.0 >> 1
                };
            }
        }
    }

    fn finish(self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_is_well_formed() {
        let p = png("2@abc,def,ghi,jkl").unwrap();
        assert!(p.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(
            p.ends_with(&[0xAE, 0x42, 0x60, 0x82]),
            "IEND CRC is the well-known constant"
        );
        let mut c = Crc32::default();
        c.update(b"IEND");
        assert_eq!(c.finish(), 0xAE42_6082);
        assert!(svg("x").unwrap().contains("<svg"));
    }
}
