// Containers for full-raster buffers (probabilities, masks) backed by transparent huge
// pages where the kernel offers them. A full 10980² tile needs 120 MB per uint8 band;
// faulting that in 4 KiB pages costs more than the work done on it on some machines.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace nimbus {

namespace detail {
// Allocations of at least 2 MiB are 2 MiB aligned and advised MADV_HUGEPAGE; smaller
// ones come from operator new. Throws std::bad_alloc when memory is exhausted.
void* allocate_large(std::size_t bytes);
void deallocate_large(void* p, std::size_t bytes) noexcept;
}  // namespace detail

template <typename T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() noexcept = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(detail::allocate_large(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { detail::deallocate_large(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const HugePageAllocator<U>&) const noexcept { return true; }
  template <typename U>
  bool operator!=(const HugePageAllocator<U>&) const noexcept { return false; }
};

template <typename T>
using LargeBuffer = std::vector<T, HugePageAllocator<T>>;

// A row-major 0/1 mask, or a 0/1 "value is non-zero" band.
using MaskBuffer = LargeBuffer<std::uint8_t>;
// A row-major float32 band (probabilities, reflectances).
using FloatBuffer = LargeBuffer<float>;

}  // namespace nimbus
