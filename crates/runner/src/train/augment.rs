//! Data augmentation of a training batch: `train.jitter`'s pixel shifts, and `train.crop` /
//! `train.flip` (the CIFAR recipe: `RandomCrop(32, padding=4)` and `RandomHorizontalFlip()`).
//! Every draw is a function of (seed, epoch, batch) alone, so a KD trial and its baseline see
//! the same images; each is one `gather` on the batch's device.

use kd_data::SplitMix64;
use tch::{Device, Kind, Tensor};

/// The stream of one augmentation (`salt`) for batch `batch` of `epoch` of student `seed`.
fn batch_stream(seed: u64, epoch: u32, batch: usize, salt: u64) -> SplitMix64 {
    SplitMix64::new(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((epoch as u64) << 40) ^ (batch as u64) ^ salt,
    )
}

/// The draws of `train.jitter` for the `rows` images of one batch: per image `(dy, dx)`, each
/// in `0..=2n`, from a stream of (`seed`, `epoch`, `batch`) alone.
pub fn jitter_draws(n: usize, seed: u64, epoch: u32, batch: usize, rows: usize) -> Vec<i64> {
    let mut rng = batch_stream(seed, epoch, batch, 0x6a69_7474_6572);
    let mut out = Vec::with_capacity(2 * rows);
    for _ in 0..rows {
        out.push(rng.below(2 * n as u64 + 1) as i64);
        out.push(rng.below(2 * n as u64 + 1) as i64);
    }
    out
}

/// The draws of `train.crop` / `train.flip` for the `rows` images of one batch: per image
/// `(dy, dx, mirror)` (mirror 0 or 1), from a stream of (`seed`, `epoch`, `batch`) alone.
pub fn crop_draws(
    pad: usize,
    flip: bool,
    seed: u64,
    epoch: u32,
    batch: usize,
    rows: usize,
) -> Vec<i64> {
    let mut rng = batch_stream(seed, epoch, batch, 0x6372_6f70_666c_6970);
    let mut out = Vec::with_capacity(3 * rows);
    for _ in 0..rows {
        out.push(rng.below(2 * pad as u64 + 1) as i64);
        out.push(rng.below(2 * pad as u64 + 1) as i64);
        out.push(i64::from(flip && rng.below(2) == 1));
    }
    out
}

/// Each image's `h x w` window of `padded` (`[B, C, Hp * Wp]`, rows `wp` wide) at its offset
/// `(dy, dx)` (`draws` columns 0 and 1), left-right mirrored where `mirror` (`[B, 1, 1]`) is
/// true: one `gather`, its index built on the device.
fn window(
    padded: &Tensor,
    wp: i64,
    (h, w): (i64, i64),
    draws: &Tensor,
    mirror: Option<&Tensor>,
) -> Tensor {
    let (b, c) = (padded.size()[0], padded.size()[1]);
    let device = padded.device();
    let i = Tensor::arange(h, (Kind::Int64, device)).view([1, h, 1]);
    let j = Tensor::arange(w, (Kind::Int64, device)).view([1, 1, w]);
    let col = match mirror {
        Some(m) => (-&j + (w - 1)).where_self(m, &j),
        None => j,
    };
    let dy = draws.select(1, 0).view([b, 1, 1]);
    let dx = draws.select(1, 1).view([b, 1, 1]);
    let idx = ((i + dy) * wp + col + dx).view([b, 1, h * w]);
    padded
        .gather(2, &idx.expand([b, c, h * w], false), false)
        .view([b, c, h, w])
}

/// `x` (`[B, C, H, W]`) with image b shifted by `draws[b] - n` pixels down and right (`draws`:
/// `[B, 2]` on `x`'s device, from [`jitter_draws`]), the uncovered border filled with `fill`
/// (the standardised black pixel). One `gather`; no transfer to or from the host.
pub fn jitter_with(x: &Tensor, n: usize, draws: &Tensor, fill: f64) -> Tensor {
    if n == 0 {
        return x.shallow_clone();
    }
    let size = x.size();
    let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
    let n = n as i64;
    let (hp, wp) = (h + 2 * n, w + 2 * n);
    let padded = ((x - fill).constant_pad_nd([n, n, n, n]) + fill).view([b, c, hp * wp]);
    window(&padded, wp, (h, w), draws, None)
}

/// `x` (`[B, C, H, W]`) with every image padded by `pad` pixels of `fill` (`[1, C, 1, 1]`, each
/// channel's standardised black) on every side and cut back to `H x W` at offset `(dy, dx)`,
/// then mirrored left-right where `mirror` is 1 (`draws`: `[B, 3]` on `x`'s device, from
/// [`crop_draws`]): torchvision's `RandomCrop(H, padding=pad)` and `RandomHorizontalFlip()`.
/// One `gather`; no transfer to or from the host.
pub fn crop_flip_with(x: &Tensor, pad: usize, flip: bool, fill: &Tensor, draws: &Tensor) -> Tensor {
    if pad == 0 && !flip {
        return x.shallow_clone();
    }
    let size = x.size();
    let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
    let p = pad as i64;
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    let padded = if p > 0 {
        ((x - fill).constant_pad_nd([p, p, p, p]) + fill).view([b, c, hp * wp])
    } else {
        x.view([b, c, hp * wp])
    };
    let mirror = draws.select(1, 2).view([b, 1, 1]).eq(1);
    window(&padded, wp, (h, w), draws, Some(&mirror))
}

/// [`jitter_with`] of one batch's draws, uploaded (tests, and batches outside an epoch's plan).
pub fn jitter(x: &Tensor, n: usize, seed: u64, epoch: u32, batch: usize, fill: f64) -> Tensor {
    if n == 0 {
        return x.shallow_clone();
    }
    let rows = x.size()[0];
    let draws = super::host::upload(
        &jitter_draws(n, seed, epoch, batch, rows as usize),
        x.device(),
    )
    .view([rows, 2]);
    jitter_with(x, n, &draws, fill)
}

/// [`crop_flip_with`] of one batch's draws, uploaded (tests, and batches outside an epoch's
/// plan).
pub fn crop_flip(
    x: &Tensor,
    pad: usize,
    flip: bool,
    fill: &Tensor,
    seed: u64,
    epoch: u32,
    batch: usize,
) -> Tensor {
    if pad == 0 && !flip {
        return x.shallow_clone();
    }
    let rows = x.size()[0];
    let draws = crop_draws(pad, flip, seed, epoch, batch, rows as usize);
    let draws = super::host::upload(&draws, x.device()).view([rows, 3]);
    crop_flip_with(x, pad, flip, fill, &draws)
}

/// The augmentation draws of a whole epoch, uploaded at once: batch `b` of `rows` images is
/// rows `b * batch_size ..` of each.
pub struct EpochDraws {
    pub epoch: u32,
    batch_size: usize,
    /// `[n, 2]`: [`jitter_draws`] of every batch, in batch order.
    jitter: Option<Tensor>,
    /// `[n, 3]`: [`crop_draws`] of every batch, in batch order.
    crop: Option<Tensor>,
}

impl EpochDraws {
    /// The draws of `epoch` for `n` training images in batches of `batch_size`: one upload per
    /// augmentation.
    pub fn new(
        (jitter, pad, flip): (usize, usize, bool),
        seed: u64,
        epoch: u32,
        n: usize,
        batch_size: usize,
        device: Device,
    ) -> EpochDraws {
        let batches = (0..n.div_ceil(batch_size.max(1)))
            .map(|b| (b, batch_size.min(n - b * batch_size)))
            .collect::<Vec<_>>();
        let jitter = (jitter > 0).then(|| {
            let all: Vec<i64> = batches
                .iter()
                .flat_map(|&(b, rows)| jitter_draws(jitter, seed, epoch, b, rows))
                .collect();
            super::host::upload(&all, device).view([n as i64, 2])
        });
        let crop = (pad > 0 || flip).then(|| {
            let all: Vec<i64> = batches
                .iter()
                .flat_map(|&(b, rows)| crop_draws(pad, flip, seed, epoch, b, rows))
                .collect();
            super::host::upload(&all, device).view([n as i64, 3])
        });
        EpochDraws {
            epoch,
            batch_size,
            jitter,
            crop,
        }
    }

    /// Batch `batch`'s `rows` rows of `draws`, when that is this epoch's planned batch (its
    /// place and size).
    fn rows(&self, draws: &Option<Tensor>, batch: usize, rows: i64) -> Option<Tensor> {
        let d = draws.as_ref()?;
        let (n, bs) = (d.size()[0], self.batch_size as i64);
        let start = batch as i64 * bs;
        (start < n && rows == bs.min(n - start)).then(|| d.narrow(0, start, rows))
    }

    pub fn jitter(&self, batch: usize, rows: i64) -> Option<Tensor> {
        self.rows(&self.jitter, batch, rows)
    }

    pub fn crop(&self, batch: usize, rows: i64) -> Option<Tensor> {
        self.rows(&self.crop, batch, rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn jitter_shifts_each_image_by_at_most_n_and_fills_the_border() {
        // Four 5x5 images, one bright pixel each at the centre, background -1.
        let x = Tensor::full([4, 1, 5, 5], -1.0, (Kind::Float, tch::Device::Cpu));
        let _ = x.narrow(2, 2, 1).narrow(3, 2, 1).fill_(7.0);
        assert!(jitter(&x, 0, 1, 1, 0, -1.0).equal(&x));
        let j = jitter(&x, 2, 5, 3, 7, -1.0);
        assert_eq!(j.size(), [4, 1, 5, 5]);
        let mut moved = 0;
        for b in 0..4 {
            let img = j.get(b).get(0);
            // Still one bright pixel (a shift of 2 keeps the centre inside), the rest the fill.
            assert_eq!(img.eq(7.0).sum(Kind::Int64).int64_value(&[]), 1);
            assert_eq!(img.eq(-1.0).sum(Kind::Int64).int64_value(&[]), 24);
            let at = img.flatten(0, -1).argmax(0, false).int64_value(&[]);
            let (r, c) = (at / 5, at % 5);
            assert!((r - 2).abs() <= 2 && (c - 2).abs() <= 2);
            moved += i64::from(at != 12);
        }
        assert!(moved > 0, "some image moved");
        // A function of (seed, epoch, batch) alone: a KD trial and its baseline agree.
        assert!(j.equal(&jitter(&x, 2, 5, 3, 7, -1.0)));
        let other = (0..8).any(|b| !jitter(&x, 2, 5, 3, b, -1.0).equal(&j));
        assert!(other, "another batch gets other shifts");
        // A shift of 1 on a 5x5 image whose edge is bright brings in the fill.
        let edge = Tensor::full([16, 1, 5, 5], 3.0, (Kind::Float, tch::Device::Cpu));
        let e = jitter(&edge, 1, 0, 1, 0, -9.0);
        assert!(e.eq(-9.0).sum(Kind::Int64).int64_value(&[]) > 0);
    }

    /// The device-side index equals a pixel-by-pixel reading of the draws (image b's pixel
    /// (i, j) is the padded image's (i + dy, j + dx), or (i + dy, W - 1 - j + dx) mirrored),
    /// and an epoch's draws uploaded at once are each batch's own draws.
    #[test]
    fn the_device_index_reads_the_draws_pixel_by_pixel_and_an_epoch_is_its_batches() {
        let cpu = (Kind::Float, tch::Device::Cpu);
        let (b, c, h, w) = (5i64, 2i64, 3i64, 4i64);
        let x = Tensor::arange(b * c * h * w, cpu).view([b, c, h, w]);
        let fill = Tensor::from_slice(&[-1.0f32, -2.0]).view([1, 2, 1, 1]);
        for (pad, flip) in [(2usize, true), (1, false), (0, true)] {
            let draws = crop_draws(pad, flip, 9, 2, 3, b as usize);
            let out = crop_flip(&x, pad, flip, &fill, 9, 2, 3);
            let p = pad as i64;
            for img in 0..b {
                let (dy, dx, m) = (
                    draws[3 * img as usize],
                    draws[3 * img as usize + 1],
                    draws[3 * img as usize + 2],
                );
                for ch in 0..c {
                    for i in 0..h {
                        for j in 0..w {
                            let col = if m == 1 { w - 1 - j } else { j };
                            let (si, sj) = (i + dy - p, col + dx - p);
                            let want = if (0..h).contains(&si) && (0..w).contains(&sj) {
                                x.double_value(&[img, ch, si, sj])
                            } else {
                                -1.0 - ch as f64
                            };
                            assert_eq!(out.double_value(&[img, ch, i, j]), want);
                        }
                    }
                }
            }
        }
        let shifted = jitter(&x, 1, 4, 1, 0, -7.0);
        let d = jitter_draws(1, 4, 1, 0, b as usize);
        for img in 0..b {
            let (dy, dx) = (d[2 * img as usize], d[2 * img as usize + 1]);
            for i in 0..h {
                for j in 0..w {
                    let (si, sj) = (i + dy - 1, j + dx - 1);
                    let want = if (0..h).contains(&si) && (0..w).contains(&sj) {
                        x.double_value(&[img, 1, si, sj])
                    } else {
                        -7.0
                    };
                    assert_eq!(shifted.double_value(&[img, 1, i, j]), want);
                }
            }
        }
        // 11 images in batches of 4: 4, 4, 3.
        let epoch = EpochDraws::new((2, 1, true), 6, 3, 11, 4, tch::Device::Cpu);
        for (batch, rows) in [(0usize, 4i64), (1, 4), (2, 3)] {
            let j = epoch.jitter(batch, rows).unwrap();
            let want = jitter_draws(2, 6, 3, batch, rows as usize);
            assert_eq!(Vec::<i64>::try_from(j.flatten(0, -1)).unwrap(), want);
            let c = epoch.crop(batch, rows).unwrap();
            let want = crop_draws(1, true, 6, 3, batch, rows as usize);
            assert_eq!(Vec::<i64>::try_from(c.flatten(0, -1)).unwrap(), want);
        }
        assert!(
            epoch.jitter(2, 4).is_none(),
            "not the planned size of batch 2"
        );
        assert!(epoch.crop(3, 1).is_none(), "no batch 3");
    }

    #[test]
    fn crop_and_flip_are_windows_of_the_padded_image_as_torchvision_cuts_them() {
        let cpu = (Kind::Float, tch::Device::Cpu);
        // 64 two-channel 4x5 images with distinct pixels; channel 1 is black at -2.
        let x = Tensor::arange(64 * 2 * 20, cpu).view([64, 2, 4, 5]);
        let fill = Tensor::from_slice(&[-1.0f32, -2.0]).view([1, 2, 1, 1]);
        assert!(crop_flip(&x, 0, false, &fill, 1, 1, 0).equal(&x));
        let out = crop_flip(&x, 2, true, &fill, 7, 3, 5);
        assert_eq!(out.size(), [64, 2, 4, 5]);
        assert!(
            out.equal(&crop_flip(&x, 2, true, &fill, 7, 3, 5)),
            "a function of its draws"
        );
        assert!(
            !out.equal(&crop_flip(&x, 2, true, &fill, 7, 3, 6)),
            "another batch, other draws"
        );
        // Every output image is one of the (2p+1)^2 windows of the padded image, mirrored or
        // not, the same window for both channels: torchvision's
        //   F.pad(img, 2, fill=black)[:, dy:dy+4, dx:dx+5], then .flip(-1) or not.
        let (mut flipped, mut shifted) = (0, 0);
        for i in 0..64 {
            let img = x.get(i);
            let pad = Tensor::cat(
                &[
                    (img.narrow(0, 0, 1) + 1.0).constant_pad_nd([2, 2, 2, 2]) - 1.0,
                    (img.narrow(0, 1, 1) + 2.0).constant_pad_nd([2, 2, 2, 2]) - 2.0,
                ],
                0,
            );
            let got = out.get(i);
            let mut found = None;
            for dy in 0..5 {
                for dx in 0..5 {
                    let win = pad.narrow(1, dy, 4).narrow(2, dx, 5);
                    for m in [false, true] {
                        let w = if m {
                            win.flip([2])
                        } else {
                            win.shallow_clone()
                        };
                        if w.equal(&got) {
                            found = Some((dy, dx, m));
                        }
                    }
                }
            }
            let (dy, dx, m) = found.unwrap_or_else(|| panic!("image {i} is no window"));
            flipped += i32::from(m);
            shifted += i32::from((dy, dx) != (2, 2));
        }
        // Half the images flip, most move (1/25 of them stay put): loose bounds on 64 draws.
        assert!((16..=48).contains(&flipped), "{flipped} of 64 flipped");
        assert!(shifted >= 48, "{shifted} of 64 moved");
    }
}
