//! Data augmentation of a training batch: `train.jitter`'s pixel shifts, and `train.crop` /
//! `train.flip` (the CIFAR recipe: `RandomCrop(32, padding=4)` and `RandomHorizontalFlip()`).
//! Every draw is a function of (seed, epoch, batch) alone, so a KD trial and its baseline see
//! the same images; each is one `gather` on the batch's device.

use kd_data::SplitMix64;
use tch::Tensor;

/// `x` (`[B, C, H, W]`) with each image shifted by up to `n` pixels in each direction, the
/// shifts drawn from a stream of (`seed`, `epoch`, `batch`) alone (so a KD trial and its
/// baseline see the same shifts), the uncovered border filled with `fill` (the standardised
/// black pixel). One `gather`, on any device.
pub fn jitter(x: &Tensor, n: usize, seed: u64, epoch: u32, batch: usize, fill: f64) -> Tensor {
    if n == 0 {
        return x.shallow_clone();
    }
    let size = x.size();
    let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
    let n = n as i64;
    let (hp, wp) = (h + 2 * n, w + 2 * n);
    let padded = ((x - fill).constant_pad_nd([n, n, n, n]) + fill).view([b, c, hp * wp]);
    let mut rng = SplitMix64::new(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ ((epoch as u64) << 40)
            ^ (batch as u64)
            ^ 0x6a69_7474_6572,
    );
    let offsets: Vec<i64> = (0..b)
        .map(|_| {
            let dy = rng.below(2 * n as u64 + 1) as i64;
            let dx = rng.below(2 * n as u64 + 1) as i64;
            dy * wp + dx
        })
        .collect();
    let device = x.device();
    let base: Vec<i64> = (0..h)
        .flat_map(|i| (0..w).map(move |j| i * wp + j))
        .collect();
    let idx = Tensor::from_slice(&base)
        .to_device(device)
        .view([1, 1, h * w])
        + Tensor::from_slice(&offsets)
            .to_device(device)
            .view([b, 1, 1]);
    padded
        .gather(2, &idx.expand([b, c, h * w], false), false)
        .view([b, c, h, w])
}

/// `x` (`[B, C, H, W]`) padded by `pad` pixels of `fill` (`[1, C, 1, 1]`: each channel's
/// standardised black) on every side, an `H x W` window cut at a random offset in
/// `0..=2 * pad` each way, and with `flip` each image mirrored left-right with probability
/// 1/2. As torchvision's `RandomCrop(H, padding=pad)` then `RandomHorizontalFlip()` on the
/// unnormalised image, since normalising maps black to `fill`.
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
    let size = x.size();
    let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
    let p = pad as i64;
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    let padded = if p > 0 {
        ((x - fill).constant_pad_nd([p, p, p, p]) + fill).view([b, c, hp * wp])
    } else {
        x.view([b, c, hp * wp])
    };
    // A stream of its own ("cropflip"), apart from jitter's.
    let mut rng = SplitMix64::new(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ ((epoch as u64) << 40)
            ^ (batch as u64)
            ^ 0x6372_6f70_666c_6970,
    );
    let mut idx = Vec::with_capacity((b * h * w) as usize);
    for _ in 0..b {
        let dy = rng.below(2 * p as u64 + 1) as i64;
        let dx = rng.below(2 * p as u64 + 1) as i64;
        let mirror = flip && rng.below(2) == 1;
        for i in 0..h {
            for j in 0..w {
                let col = if mirror { w - 1 - j } else { j };
                idx.push((i + dy) * wp + col + dx);
            }
        }
    }
    let idx = Tensor::from_slice(&idx)
        .to_device(x.device())
        .view([b, 1, h * w]);
    padded
        .gather(2, &idx.expand([b, c, h * w], false), false)
        .view([b, c, h, w])
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
