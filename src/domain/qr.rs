//! QR code renderings of a pairing code: SVG (the `qrcode` crate's renderer) and a 1-bit PNG
//! (the modules drawn here, encoded by the `png` crate; `qrcode`'s own PNG path needs `image`).

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

/// A 1-bit grayscale PNG, dark modules black, with a 4-module white quiet zone.
pub fn png(data: &str) -> Result<Vec<u8>> {
    let qr = code(data)?;
    let width = qr.width();
    let colors = qr.to_colors();
    let side = (width + 2 * QUIET) * SCALE;
    let row_bytes = side.div_ceil(8);
    let mut pixels = vec![0xFFu8; row_bytes * side]; // 1 = white
    for y in 0..side {
        let Some(my) = (y / SCALE).checked_sub(QUIET).filter(|my| *my < width) else {
            continue;
        };
        for x in 0..side {
            let dark = (x / SCALE)
                .checked_sub(QUIET)
                .is_some_and(|mx| mx < width && colors[my * width + mx] == qrcode::Color::Dark);
            if dark {
                pixels[y * row_bytes + x / 8] &= !(0x80 >> (x % 8));
            }
        }
    }
    encode_png(side as u32, &pixels)
        .map_err(|e| Error::Internal(format!("QR PNG encoding failed: {e}")))
}

fn encode_png(side: u32, pixels: &[u8]) -> std::result::Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a PNG back to one luminance byte per pixel.
    fn decode_png(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        buf.truncate(info.buffer_size());
        (info.width as usize, info.height as usize, buf)
    }

    #[test]
    fn png_is_well_formed() {
        let p = png("2@abc,def,ghi,jkl").unwrap();
        assert!(p.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(
            p.ends_with(&[0xAE, 0x42, 0x60, 0x82]),
            "IEND CRC is the well-known constant"
        );
        assert!(svg("x").unwrap().contains("<svg"));
    }

    #[test]
    fn png_scans_back_to_the_pairing_code() {
        let text = "2@Xk3c9bQ0vT1mZ,f8e2Hq0sYp1LwK7dA9uR3nV5cB6xJ2gE4tM8oI0kU=,aGVsbG8=,d29ybGQ=";
        let bytes = png(text).unwrap();
        let (w, h, luma) = decode_png(&bytes);
        let modules = code(text).unwrap().width();
        assert_eq!((w, h), ((modules + 2 * QUIET) * SCALE, w));
        assert!(
            luma.iter().all(|&v| v == 0 || v == 255),
            "pure black and white"
        );
        assert!(
            luma[..w * QUIET * SCALE].iter().all(|&v| v == 255),
            "quiet zone"
        );
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| luma[y * w + x]);
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, content) = grids[0].decode().unwrap();
        assert_eq!(content, text);
    }
}
