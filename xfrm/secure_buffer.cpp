#include "xfrm/secure_buffer.hpp"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <utility>

namespace ipsec {

SecureBuffer::SecureBuffer(std::size_t size) {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  size_ = (size + page - 1) / page * page;
  void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) std::abort();
  data_ = static_cast<std::uint8_t*>(p);
  dontdump_ = ::madvise(p, size_, MADV_DONTDUMP) == 0;
}

SecureBuffer::SecureBuffer(SecureBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), dontdump_(o.dontdump_) {}

SecureBuffer& SecureBuffer::operator=(SecureBuffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    dontdump_ = o.dontdump_;
  }
  return *this;
}

SecureBuffer::~SecureBuffer() { release(); }

void SecureBuffer::wipe(std::size_t n) {
  if (data_ != nullptr) explicit_bzero(data_, n < size_ ? n : size_);
}

void SecureBuffer::release() noexcept {
  if (data_ == nullptr) return;
  explicit_bzero(data_, size_);
  ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace ipsec
