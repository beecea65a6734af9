// SecureBuffer: a receive buffer for netlink messages that may carry SA keys.
// Page-aligned anonymous memory (mmap), excluded from core dumps
// (MADV_DONTDUMP), wiped (explicit_bzero) by wipe() and before it is
// unmapped. Move-only; not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace ipsec {

class SecureBuffer {
 public:
  SecureBuffer() = default;
  // Rounds `size` up to whole pages. Aborts when the memory cannot be mapped
  // (as operator new would throw): a receive buffer is not optional.
  explicit SecureBuffer(std::size_t size);
  SecureBuffer(SecureBuffer&& o) noexcept;
  SecureBuffer& operator=(SecureBuffer&& o) noexcept;
  SecureBuffer(const SecureBuffer&) = delete;
  SecureBuffer& operator=(const SecureBuffer&) = delete;
  ~SecureBuffer();

  std::uint8_t* data() { return data_; }
  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::span<std::uint8_t> span() { return {data_, size_}; }
  // Zeroes the first `n` bytes (what the last datagram filled).
  void wipe(std::size_t n);
  // Whether the kernel agreed to leave it out of core dumps.
  bool dontdump() const { return dontdump_; }

 private:
  void release() noexcept;
  std::uint8_t* data_{nullptr};
  std::size_t size_{0};
  bool dontdump_{false};
};

}  // namespace ipsec
