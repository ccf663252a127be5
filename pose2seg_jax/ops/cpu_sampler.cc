// Affine-Align's bilinear sampling on the CPU, as an XLA FFI custom call (see cpu_sampler.py).
//
// out[b, p, i, j, :] = bilinear sample of features[b] at (src_y[b, p, i, j], src_x[b, p, i, j]),
// corners outside the map reading 0: exactly jax.scipy.ndimage.map_coordinates(order=1,
// mode="constant", cval=0) per channel, with its weights (w_y * w_x) and its order of summation
// ((c00 + c01) + c10) + c11.
//
// Why by hand: XLA's fused gather writes the (B, P, A, A, C) output with ordinary stores, so each
// output cache line is first read from memory; here whole channel rows are blended and written
// with non-temporal stores, which is what brings the sampling to the bandwidth of a memcpy.

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// Aliases: the handler macro below cannot take template arguments with commas.
using Rank4 = ffi::Buffer<ffi::F32, 4>;
using Rank5 = ffi::ResultBuffer<ffi::F32, 5>;
using Rank5Type = ffi::Buffer<ffi::F32, 5>;

namespace {

struct Corner {
  const float* row;
  float weight;
};

// Blends one output pixel's C channels from its four corner rows.
inline void BlendRow(const Corner* c, int64_t channels, float* out) {
  int64_t k = 0;
#if defined(__AVX__)
  if ((reinterpret_cast<uintptr_t>(out) & 31) == 0) {
    const __m256 w0 = _mm256_set1_ps(c[0].weight), w1 = _mm256_set1_ps(c[1].weight);
    const __m256 w2 = _mm256_set1_ps(c[2].weight), w3 = _mm256_set1_ps(c[3].weight);
    for (; k + 8 <= channels; k += 8) {
      __m256 v = _mm256_mul_ps(w0, _mm256_loadu_ps(c[0].row + k));
      v = _mm256_add_ps(v, _mm256_mul_ps(w1, _mm256_loadu_ps(c[1].row + k)));
      v = _mm256_add_ps(v, _mm256_mul_ps(w2, _mm256_loadu_ps(c[2].row + k)));
      v = _mm256_add_ps(v, _mm256_mul_ps(w3, _mm256_loadu_ps(c[3].row + k)));
      _mm256_stream_ps(out + k, v);
    }
  }
#endif
  for (; k < channels; ++k) {
    float v = c[0].weight * c[0].row[k];
    v += c[1].weight * c[1].row[k];
    v += c[2].weight * c[2].row[k];
    v += c[3].weight * c[3].row[k];
    out[k] = v;
  }
}

struct Shapes {
  int64_t batch, height, width, channels, pixels_per_image;
};

// Output pixels [begin, end) of the flattened (B, P, A, A) grid.
void SampleRange(const float* features, const float* src_x, const float* src_y,
                 const float* zeros, const Shapes& s, int64_t begin, int64_t end, float* out) {
  for (int64_t pixel = begin; pixel < end; ++pixel) {
    const int64_t image = pixel / s.pixels_per_image;
    const float* map = features + image * s.height * s.width * s.channels;
    const float x = src_x[pixel], y = src_y[pixel];
    Corner corners[4];
    if (std::isfinite(x) && std::isfinite(y)) {
      const float x0 = std::floor(x), y0 = std::floor(y);
      const float fx = x - x0, fy = y - y0;
      const float wx[2] = {1.0f - fx, fx}, wy[2] = {1.0f - fy, fy};
      // Outside the int32 range every corner is outside the map anyway.
      const bool near = std::fabs(x0) < 1e9f && std::fabs(y0) < 1e9f;
      const int64_t ix = near ? static_cast<int64_t>(x0) : -2;
      const int64_t iy = near ? static_cast<int64_t>(y0) : -2;
      for (int dy = 0; dy < 2; ++dy) {
        for (int dx = 0; dx < 2; ++dx) {
          const int64_t cy = iy + dy, cx = ix + dx;
          const bool inside = cy >= 0 && cy < s.height && cx >= 0 && cx < s.width;
          Corner& c = corners[2 * dy + dx];
          c.weight = wy[dy] * wx[dx];
          c.row = inside ? map + (cy * s.width + cx) * s.channels : zeros;
        }
      }
    } else {
      for (Corner& c : corners) c = {zeros, 0.0f};
    }
    BlendRow(corners, s.channels, out + pixel * s.channels);
  }
#if defined(__AVX__)
  _mm_sfence();
#endif
}

ffi::Error Sample(ffi::ThreadPool pool, Rank4 features, Rank4 src_x, Rank4 src_y, Rank5 out) {
  const auto fd = features.dimensions();
  const auto cd = src_x.dimensions();
  const auto yd = src_y.dimensions();
  if (cd[0] != fd[0] || yd[0] != cd[0] || yd[1] != cd[1] || yd[2] != cd[2] || yd[3] != cd[3]) {
    return ffi::Error::InvalidArgument(
        "pose2seg_bilinear_sample: features (B, H, W, C) and coordinates (B, P, A, A) must "
        "share B, and src_x and src_y their shape");
  }
  const Shapes s{fd[0], fd[1], fd[2], fd[3], cd[1] * cd[2] * cd[3]};
  const int64_t total = s.batch * s.pixels_per_image;
  if (total == 0 || s.channels == 0) return ffi::Error::Success();
  const std::vector<float> zeros(s.channels, 0.0f);
  const float* f = features.typed_data();
  const float* x = src_x.typed_data();
  const float* y = src_y.typed_data();
  float* o = out->typed_data();

  // Chunks of whole align rows, one per thread of XLA's intra-op pool (this thread runs one).
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t row = cd[3];
  const int64_t rows = total / row;
  const int64_t tasks = std::min<int64_t>(threads, rows);
  std::mutex mutex;
  std::condition_variable done;
  int64_t pending = tasks - 1;
  for (int64_t t = 1; t < tasks; ++t) {
    const int64_t begin = rows * t / tasks * row, end = rows * (t + 1) / tasks * row;
    pool.Schedule([&, begin, end] {
      SampleRange(f, x, y, zeros.data(), s, begin, end, o);
      std::lock_guard<std::mutex> lock(mutex);
      if (--pending == 0) done.notify_one();
    });
  }
  SampleRange(f, x, y, zeros.data(), s, 0, rows / tasks * row, o);
  std::unique_lock<std::mutex> lock(mutex);
  done.wait(lock, [&] { return pending == 0; });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(Pose2SegBilinearSample, Sample,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Rank4>()
                                  .Arg<Rank4>()
                                  .Arg<Rank4>()
                                  .Ret<Rank5Type>());
