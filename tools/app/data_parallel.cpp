// Gradient buckets started during backward, and the agreements ranks check before and while they
// train: same configuration, same data, same replica.
#include "tools/app/data_parallel.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/errors.h"

namespace sb {

using Clock = std::chrono::steady_clock;

int64_t gradient_bucket_bytes() {
  const char* kb = std::getenv("SMALLBATCH_BUCKET_KB");
  if (!kb || !*kb) return 256 << 10;
  char* end = nullptr;
  const long long v = std::strtoll(kb, &end, 10);
  SB_CHECK(end && *end == '\0' && v >= 0 && v < (1LL << 30), "SMALLBATCH_BUCKET_KB: expected a whole number of "
           "KiB (0: one bucket after backward), got '", kb, "'");
  return v == 0 ? INT64_MAX : v << 10;
}

GradientBuckets::GradientBuckets(Communicator& comm, std::vector<Var> params, int64_t bucket_bytes)
    : comm_(comm), params_(std::move(params)), bucket_of_(params_.size()), is_ready_(params_.size(), 0) {
  // Reverse registration order: the output side's gradients are final first.
  for (size_t k = params_.size(); k-- > 0;) {
    const int64_t n = params_[k].numel();
    if (buckets_.empty() || static_cast<int64_t>(buckets_.back().data.size() * sizeof(float)) >= bucket_bytes)
      buckets_.emplace_back();
    Bucket& b = buckets_.back();
    b.params.push_back(k);
    b.offsets.push_back(static_cast<int64_t>(b.data.size()));
    b.data.resize(b.data.size() + static_cast<size_t>(n));
    bucket_of_[k] = buckets_.size() - 1;
    stats_.bytes += n * static_cast<int64_t>(sizeof(float));
  }
  stats_.buckets = static_cast<int64_t>(buckets_.size());
  for (size_t k = 0; k < params_.size(); ++k)
    params_[k].node()->on_grad_ready = [this, k](Node&) { ready(k); };
}

GradientBuckets::~GradientBuckets() {
  for (auto& b : buckets_)
    if (b.sum) b.sum->wait();
  for (auto& p : params_) p.node()->on_grad_ready = nullptr;
}

void GradientBuckets::begin() {
  std::fill(is_ready_.begin(), is_ready_.end(), 0);
  for (auto& b : buckets_) b.waiting = b.params.size(), b.sum.reset();
  launched_any_ = false;
}

void GradientBuckets::ready(size_t k) {
  if (is_ready_[k]) return;
  is_ready_[k] = 1;
  Bucket& b = buckets_[bucket_of_[k]];
  if (--b.waiting == 0) launch(b);
  // Non-blocking collectives advance only inside MPI calls: let the started ones move on.
  for (auto& other : buckets_)
    if (other.sum) other.sum->test();
}

void GradientBuckets::launch(Bucket& b) {
  for (size_t i = 0; i < b.params.size(); ++i) {
    const Var& p = params_[b.params[i]];
    float* dst = b.data.data() + b.offsets[i];
    const Tensor& g = p.grad();
    if (g.defined()) std::memcpy(dst, g.data(), static_cast<size_t>(p.numel()) * sizeof(float));
    else std::fill(dst, dst + p.numel(), 0.f);  // backward never reached it: it contributes zero
  }
  if (!launched_any_) first_launch_ = Clock::now(), launched_any_ = true;
  b.waiting = 0;
  b.sum = comm_.start_sum(b.data.data(), static_cast<int64_t>(b.data.size()));
}

void GradientBuckets::finish() {
  const auto backward_end = Clock::now();
  for (auto& b : buckets_)
    if (!b.sum) launch(b);
  for (auto& b : buckets_) b.sum->wait();
  const auto done = Clock::now();
  stats_.wait_seconds += std::chrono::duration<double>(done - backward_end).count();
  stats_.comm_seconds += std::chrono::duration<double>(done - first_launch_).count();
  ++stats_.steps;
  for (auto& b : buckets_) {
    for (size_t i = 0; i < b.params.size(); ++i) {
      Var& p = params_[b.params[i]];
      Tensor g = Tensor::empty(p.shape());
      std::memcpy(g.data(), b.data.data() + b.offsets[i], static_cast<size_t>(p.numel()) * sizeof(float));
      p.set_grad(g);
    }
    b.sum.reset();
  }
}

// ---- agreements ----

static uint64_t fnv1a(const void* data, size_t bytes, uint64_t h = 0xcbf29ce484222325ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

void check_same_on_all_ranks(Communicator& comm, const nlohmann::json& settings, const std::string& what) {
  const std::string text = settings.dump();
  const uint64_t mine = fnv1a(text.data(), text.size());
  std::vector<uint64_t> hashes(static_cast<size_t>(comm.size()));
  comm.allgather(&mine, sizeof mine, hashes.data());
  if (std::all_of(hashes.begin(), hashes.end(), [&](uint64_t h) { return h == hashes[0]; })) return;
  // Some rank differs: every rank gathers every text and reports the same differences.
  int64_t len = static_cast<int64_t>(text.size());
  std::vector<int64_t> lens(static_cast<size_t>(comm.size()));
  comm.allgather(&len, sizeof len, lens.data());
  const int64_t width = *std::max_element(lens.begin(), lens.end());
  std::string padded = text;
  padded.resize(static_cast<size_t>(width), ' ');
  std::string all(static_cast<size_t>(width * comm.size()), ' ');
  comm.allgather(padded.data(), width, all.data());
  const nlohmann::json first = nlohmann::json::parse(all.substr(0, static_cast<size_t>(lens[0]))).flatten();
  std::string diff;
  for (int r = 1; r < comm.size(); ++r) {
    const nlohmann::json other =
        nlohmann::json::parse(all.substr(static_cast<size_t>(r * width), static_cast<size_t>(lens[r]))).flatten();
    for (auto& [key, value] : first.items()) {
      const bool has = other.contains(key);
      if (!has || other.at(key) != value)
        diff += str("\n  ", key.substr(1), ": ", value.dump(), " on rank 0, ", has ? other.at(key).dump() : "absent",
                    " on rank ", r);
    }
    for (auto& [key, value] : other.items())
      if (!first.contains(key)) diff += str("\n  ", key.substr(1), ": absent on rank 0, ", value.dump(), " on rank ", r);
  }
  fail("the ranks were started with different ", what, " (every rank must run the same command on the same data):",
       diff);
}

template <class T>
uint64_t tensor_hash(const BasicTensor<T>& t) {
  return fnv1a(t.data(), static_cast<size_t>(t.numel()) * sizeof(T));
}
template uint64_t tensor_hash(const BasicTensor<float>&);
template uint64_t tensor_hash(const BasicTensor<int64_t>&);

uint64_t parameter_hash(const Module& model) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const auto& [name, p] : model.named_parameters())
    h = fnv1a(p.value().data(), static_cast<size_t>(p.numel()) * sizeof(float), h);
  return h;
}

void check_same_replicas(Communicator& comm, const Module& model, const std::string& when) {
  const uint64_t mine = parameter_hash(model);
  std::vector<uint64_t> hashes(static_cast<size_t>(comm.size()));
  comm.allgather(&mine, sizeof mine, hashes.data());
  std::string differ;
  for (int r = 1; r < comm.size(); ++r)
    if (hashes[static_cast<size_t>(r)] != hashes[0]) differ += str(differ.empty() ? "" : ", ", r);
  SB_CHECK(differ.empty(), "the replicas differ ", when, ": the parameters of rank(s) ", differ,
           " are not rank 0's (the gradient sums or the initialization disagree between ranks)");
}

// ---- state from rank 0 ----

namespace {

// Appends raw bytes; reads them back in order.
struct Packer {
  std::vector<char> bytes;
  template <class T>
  void put(const T& v) {
    const char* p = reinterpret_cast<const char*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof v);
  }
  void put_bytes(const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    bytes.insert(bytes.end(), c, c + n);
  }
};
struct Unpacker {
  const std::vector<char>& bytes;
  size_t at = 0;
  template <class T>
  T get() {
    T v;
    get_bytes(&v, sizeof v);
    return v;
  }
  void get_bytes(void* p, size_t n) {
    SB_CHECK(at + n <= bytes.size(), "internal: a broadcast state ended early");
    std::memcpy(p, bytes.data() + at, n);
    at += n;
  }
};

template <class T>
void pack_tensor(Packer& pk, const std::string& name, const BasicTensor<T>& t) {
  pk.put(static_cast<int64_t>(name.size()));
  pk.put_bytes(name.data(), name.size());
  pk.put(static_cast<int64_t>(t.dim()));
  for (int64_t d : t.shape()) pk.put(d);
  pk.put_bytes(t.data(), static_cast<size_t>(t.numel()) * sizeof(T));
}

template <class T>
std::pair<std::string, BasicTensor<T>> unpack_tensor(Unpacker& up) {
  std::string name(static_cast<size_t>(up.get<int64_t>()), ' ');
  up.get_bytes(name.data(), name.size());
  Shape shape(static_cast<size_t>(up.get<int64_t>()));
  for (auto& d : shape) d = up.get<int64_t>();
  BasicTensor<T> t = BasicTensor<T>::empty(shape);
  up.get_bytes(t.data(), static_cast<size_t>(t.numel()) * sizeof(T));
  return {name, t};
}

void broadcast_bytes(Communicator& comm, std::vector<char>& bytes, int root) {
  int64_t n = static_cast<int64_t>(bytes.size());
  comm.broadcast(&n, sizeof n, root);
  bytes.resize(static_cast<size_t>(n));
  if (n > 0) comm.broadcast(bytes.data(), n, root);
}

}  // namespace

StateDict broadcast_state_dict(Communicator& comm, const StateDict& mine, int root) {
  Packer pk;
  if (comm.rank() == root) {
    pk.put(static_cast<int64_t>(mine.floats.size()));
    for (const auto& [k, v] : mine.floats) pack_tensor(pk, k, v);
    pk.put(static_cast<int64_t>(mine.ints.size()));
    for (const auto& [k, v] : mine.ints) pack_tensor(pk, k, v);
  }
  broadcast_bytes(comm, pk.bytes, root);
  if (comm.rank() == root) return mine;
  StateDict sd;
  sd.source = str("rank ", root, "'s state");
  Unpacker up{pk.bytes};
  for (int64_t i = up.get<int64_t>(); i > 0; --i) sd.floats.insert(unpack_tensor<float>(up));
  for (int64_t i = up.get<int64_t>(); i > 0; --i) sd.ints.insert(unpack_tensor<int64_t>(up));
  return sd;
}

void broadcast_buffers(Communicator& comm, Module& model) {
  std::vector<std::pair<std::string, Tensor>> buffers = model.named_buffers();
  int64_t total = 0;
  for (auto& [name, t] : buffers) total += t.numel();
  if (total == 0) return;
  std::vector<float> packed(static_cast<size_t>(total));
  int64_t at = 0;
  for (auto& [name, t] : buffers) std::memcpy(packed.data() + at, t.data(), t.numel() * sizeof(float)), at += t.numel();
  comm.broadcast(packed.data(), total * static_cast<int64_t>(sizeof(float)), 0);
  at = 0;
  for (auto& [name, t] : buffers) std::memcpy(t.data(), packed.data() + at, t.numel() * sizeof(float)), at += t.numel();
}

void broadcast_floats(Communicator& comm, std::vector<float>& v) {
  std::vector<char> bytes(v.size() * sizeof(float));
  if (!v.empty()) std::memcpy(bytes.data(), v.data(), bytes.size());
  broadcast_bytes(comm, bytes, 0);
  v.resize(bytes.size() / sizeof(float));
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), bytes.size());
}

}  // namespace sb
