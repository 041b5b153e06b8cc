// Crash-safe file writing: write a temporary file beside the target, fsync it, rename it over
// the target, fsync the directory. A reader sees the old file or the new one, never a mix.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sb {

// All `size` bytes of `data` to file descriptor `fd`, retrying short and interrupted writes;
// false (errno saying why) if the system refused.
bool write_all(int fd, const void* data, size_t size);

// Throws sb::Error naming `path` and the system's reason on failure; the old file, if any, is
// left untouched and no temporary file remains.
void write_file_atomic(const std::string& path, const void* data, size_t size);
inline void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}
inline void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
  write_file_atomic(path, bytes.data(), bytes.size());
}
// The whole file as bytes; throws naming the path when it can't be read or is not a regular file.
std::string read_file(const std::string& path);

// Opens a regular file for reading and returns its descriptor (O_CLOEXEC). Opened with
// O_NONBLOCK and checked with fstat before anything waits on it: a FIFO given as a file would
// otherwise block open() until a writer appears, forever; a directory, FIFO, socket or device
// is an error naming the path and what it is ("PATH: not a regular file (it is a FIFO ...)").
int open_regular_file(const std::string& path);

// A process killed between writing and renaming leaves its temporary behind, "NAME.tmp-PID-N"
// from write_file_atomic or "NAME.tmp-PID-RANDOM-N" from save_safetensors. Removes those in `dir`
// whose NAME is one of `targets`; any other file, whatever its name, is left alone, since the
// folder may hold the user's files too. Best effort: a file that can't be removed stays.
void remove_stale_temporaries(const std::string& dir, const std::vector<std::string>& targets);

// True when a and b name the same file: the same inode when both exist, else the same path
// once both are made absolute with ".", "..", symlinks and repeated slashes resolved as far as
// they exist (std::filesystem::weakly_canonical). Never compares the strings as given.
bool same_file(const std::string& a, const std::string& b);

// The longest suffix the atomic writers add to a file name for its temporary
// (".tmp-PID-RANDOM-COUNTER": pid up to 7 digits, 9 random digits, a 20-digit counter).
inline constexpr size_t kTempSuffixMax = 43;
// Throws naming `flag` when `path` cannot be written atomically: its file name plus the
// temporary's suffix would pass NAME_MAX (255 bytes on Linux), or the whole path PATH_MAX.
// Call it before the work whose result would go there.
void check_output_name(const std::string& path, const std::string& flag);

// One writer per output folder: an exclusive flock on DIR/.lock, held until this object is
// destroyed or the process ends. The kernel drops a flock when its holder dies, so a killed run
// never blocks the next one; the file stays (removing it would race with a new holder) and
// holds the pid of its latest holder. Throws naming `flag`, the folder and the holder's pid
// when another process holds it.
class DirLock {
 public:
  DirLock() = default;
  DirLock(const std::string& dir, const std::string& flag);
  DirLock(DirLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  DirLock& operator=(DirLock&& o) noexcept;
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  ~DirLock();
  static constexpr const char* kFileName = ".lock";

 private:
  int fd_ = -1;
};

}  // namespace sb
