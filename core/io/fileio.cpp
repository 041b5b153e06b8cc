// Atomic writes (temp + fsync + rename + directory fsync), the clean-up after a writer that was
// killed half-way, and whole-file reads.
#include "core/io/fileio.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/errors.h"

namespace sb {

bool write_all(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  static std::atomic<unsigned> counter{0};
  std::string tmp = str(path, ".tmp-", getpid(), "-", counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  SB_CHECK(fd >= 0, path, ": cannot write (creating '", tmp, "' failed: ", std::strerror(errno), ")");
  auto bail = [&](const char* what) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    fail(path, ": ", what, ": ", std::strerror(err));
  };
  if (!write_all(fd, data, size)) bail("write failed");
  if (::fsync(fd) != 0) bail("fsync failed");
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail(path, ": close failed: ", std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail(path, ": cannot rename the temporary file into place: ", std::strerror(err));
  }
  // The rename is durable only once the directory entry is on disk.
  std::string dir = std::filesystem::path(path).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

int open_regular_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  SB_CHECK(fd >= 0, path, ": cannot open for reading: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail(path, ": cannot stat: ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    const char* kind = S_ISDIR(st.st_mode)    ? "a directory"
                       : S_ISFIFO(st.st_mode) ? "a FIFO, a named pipe"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                       : S_ISCHR(st.st_mode)  ? "a character device"
                       : S_ISBLK(st.st_mode)  ? "a block device"
                                              : "not a regular file";
    fail(path, ": not a regular file (it is ", kind, ")");
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);  // (regular files never block anyway)
  return fd;
}

std::string read_file(const std::string& path) {
  int fd = open_regular_file(path);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      fail(path, ": read failed: ", std::strerror(err));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

void remove_stale_temporaries(const std::string& dir, const std::vector<std::string>& targets) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code st;
    if (!it->is_regular_file(st)) continue;
    std::string name = it->path().filename().string();
    for (const std::string& t : targets) {
      std::string prefix = t + ".tmp-";
      if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
      // Only the writers' own suffix, digits and dashes: "model.safetensors.tmp-old" is not ours.
      if (name.find_first_not_of("0123456789-", prefix.size()) != std::string::npos) continue;
      std::error_code rm;
      fs::remove(it->path(), rm);
      break;
    }
  }
}

bool same_file(const std::string& a, const std::string& b) {
  namespace fs = std::filesystem;
  std::error_code ea, eb, ec;
  if (fs::exists(a, ea) && fs::exists(b, eb)) {
    bool same = fs::equivalent(a, b, ec);
    if (!ec) return same;
  }
  fs::path ca = fs::weakly_canonical(fs::absolute(a, ea), ea), cb = fs::weakly_canonical(fs::absolute(b, eb), eb);
  if (ea || eb) return fs::absolute(a).lexically_normal() == fs::absolute(b).lexically_normal();
  return ca.lexically_normal() == cb.lexically_normal();
}

void check_output_name(const std::string& path, const std::string& flag) {
  namespace fs = std::filesystem;
  fs::path p(path);
  std::string name = p.filename().string();
  SB_CHECK(!name.empty() && name != "." && name != "..", flag, ": '", path, "' names a directory; give a file name");
  long name_max = 255, path_max = 4096;
  std::string dir = p.parent_path().empty() ? "." : p.parent_path().string();
  if (long n = ::pathconf(dir.c_str(), _PC_NAME_MAX); n > 0) name_max = n;
  SB_CHECK(name.size() + kTempSuffixMax <= static_cast<size_t>(name_max), flag, ": the file name '",
           name.substr(0, 40), "...' is ", name.size(), " bytes long; at most ", name_max - static_cast<long>(kTempSuffixMax),
           " are allowed, since it is written through a temporary named NAME.tmp-PID-RANDOM-N (at most ", name_max,
           " bytes)");
  SB_CHECK(path.size() + kTempSuffixMax < static_cast<size_t>(path_max), flag, ": the path '", path.substr(0, 60),
           "...' is ", path.size(), " bytes long; with its temporary's suffix it must stay under ", path_max,
           " bytes (PATH_MAX)");
}

DirLock::DirLock(const std::string& dir, const std::string& flag) {
  std::string path = (std::filesystem::path(dir) / kFileName).string();
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  SB_CHECK(fd >= 0, flag, ": cannot create the lock file '", path, "': ", std::strerror(errno));
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    int err = errno;
    std::string holder;
    if (err == EWOULDBLOCK) {
      char buf[32] = {};
      ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
      holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
      while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
      if (holder.find_first_not_of("0123456789") != std::string::npos) holder.clear();
    }
    ::close(fd);
    SB_CHECK(err == EWOULDBLOCK, flag, ": cannot lock '", path, "': ", std::strerror(err));
    fail(flag, ": '", dir, "' is in use by another smallbatch process (",
         holder.empty() ? std::string("pid not yet recorded") : "pid " + holder, ", holding '", path,
         "'); two processes writing one folder would mix their files. Wait for it to end, or use another folder");
  }
  // Ours now: record the pid for whoever finds the folder locked.
  std::string pid = str(::getpid(), "\n");
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    // The lock holds without the pid; the message of a second process then says so.
  }
  fd_ = fd;
}

DirLock& DirLock::operator=(DirLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the flock
}

}  // namespace sb
