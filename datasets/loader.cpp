// The DataLoader's batching plan, collation and prefetching worker threads.
#include "datasets/loader.h"

#include <cstring>

namespace sb {

// Mixes (seed, a, b) into one well-spread generator seed.
static uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b) {
  uint64_t x = seed ^ (a * 0x9E3779B97F4A7C15ull) ^ (b * 0xC2B2AE3D27D4EB4Full);
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return x;
}

std::vector<int64_t> epoch_order(int64_t n, bool shuffle, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  if (shuffle) {  // Fisher-Yates with our own generator, so the order is the same everywhere
    Generator g(mix_seed(seed, 0x5EED, static_cast<uint64_t>(epoch)));
    for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[g.below(static_cast<uint64_t>(i + 1))]);
  }
  return order;
}

Batch collate(std::vector<Sample> samples, std::vector<int64_t> indices) {
  SB_CHECK(!samples.empty(), "collate: empty batch");
  const Shape& is = samples[0].image.shape();
  const Shape& ms = samples[0].mask.shape();
  for (size_t i = 1; i < samples.size(); ++i)
    SB_CHECK(samples[i].image.shape() == is && samples[i].mask.shape() == ms, "collate: sample ",
             indices[i], " has image ", samples[i].image.shape(), " and mask ", samples[i].mask.shape(),
             " but sample ", indices[0], " has ", is, " and ", ms,
             "; images in a batch must be the same size (use --image-size)");
  int64_t B = static_cast<int64_t>(samples.size());
  Shape bi = {B}, bm = {B};
  bi.insert(bi.end(), is.begin(), is.end());
  bm.insert(bm.end(), ms.begin(), ms.end());
  Batch b{Tensor::empty(bi), IndexTensor::empty(bm), std::move(indices)};
  int64_t ni = samples[0].image.numel(), nm = samples[0].mask.numel();
  for (int64_t i = 0; i < B; ++i) {
    std::memcpy(b.images.data() + i * ni, samples[i].image.data(), ni * sizeof(float));
    std::memcpy(b.masks.data() + i * nm, samples[i].mask.data(), nm * sizeof(int64_t));
  }
  return b;
}

DataLoader::DataLoader(DatasetPtr data, LoaderOptions opt) : data_(std::move(data)), opt_(std::move(opt)) {
  SB_CHECK(data_ && data_->size() > 0, "DataLoader: the dataset is empty");
  SB_CHECK(opt_.batch_size > 0, "DataLoader: batch size must be positive, got ", opt_.batch_size);
  SB_CHECK(opt_.workers >= 0, "DataLoader: workers must be >= 0, got ", opt_.workers);
  SB_CHECK(!opt_.drop_last || data_->size() >= opt_.batch_size, "DataLoader: drop_last with batch size ",
           opt_.batch_size, " leaves no batch from ", data_->size(), " samples");
  if (opt_.prefetch < 1) opt_.prefetch = 1;
  SB_CHECK(opt_.shards >= 1 && opt_.shard >= 0 && opt_.shard < opt_.shards, "DataLoader: shard ", opt_.shard, " of ",
           opt_.shards, " does not exist");
}

DataLoader::~DataLoader() { stop_workers(); }

int64_t DataLoader::batches_per_epoch() const {
  int64_t n = data_->size(), b = opt_.batch_size;
  return opt_.drop_last ? n / b : (n + b - 1) / b;
}

void DataLoader::start_epoch(int64_t epoch, int64_t first_batch) {
  auto order = epoch_order(data_->size(), opt_.shuffle, opt_.seed, epoch);
  std::vector<Job> jobs;
  for (int64_t b = first_batch; b < batches_per_epoch(); ++b) {
    int64_t lo = b * opt_.batch_size, hi = std::min<int64_t>(lo + opt_.batch_size, data_->size());
    jobs.push_back({std::vector<int64_t>(order.begin() + lo, order.begin() + hi), std::vector<int64_t>(hi - lo, epoch)});
  }
  start(std::move(jobs));
}

void DataLoader::start_steps(int64_t first_step, int64_t count) {
  int64_t n = data_->size(), B = opt_.batch_size;
  std::vector<Job> jobs;
  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  for (int64_t s = first_step; s < first_step + count; ++s) {
    Job job;
    for (int64_t p = s * B; p < (s + 1) * B; ++p) {
      int64_t e = p / n;
      if (e != order_epoch) order = epoch_order(n, opt_.shuffle, opt_.seed, e), order_epoch = e;
      job.indices.push_back(order[p % n]);
      job.epochs.push_back(e);
    }
    jobs.push_back(std::move(job));
  }
  start(std::move(jobs));
}

Batch DataLoader::load(const Job& job) const {
  std::vector<Sample> samples;
  for (size_t k = 0; k < job.indices.size(); ++k) {
    int64_t idx = job.indices[k];
    Sample s = data_->get(idx);
    if (opt_.transform) {
      Generator g(mix_seed(opt_.seed, static_cast<uint64_t>(job.epochs[k]) + 1, static_cast<uint64_t>(idx)));
      s = opt_.transform(std::move(s), g);
    }
    samples.push_back(std::move(s));
  }
  return collate(std::move(samples), job.indices);
}

void DataLoader::start(std::vector<Job> jobs) {
  stop_workers();
  if (opt_.shards > 1)
    for (Job& j : jobs) {
      const int64_t n = static_cast<int64_t>(j.indices.size());
      const int64_t lo = opt_.shard * n / opt_.shards, hi = (opt_.shard + 1) * n / opt_.shards;
      SB_CHECK(hi > lo, "DataLoader: a batch of ", n, " samples leaves shard ", opt_.shard, " of ", opt_.shards, " empty");
      j.indices = std::vector<int64_t>(j.indices.begin() + lo, j.indices.begin() + hi);
      j.epochs = std::vector<int64_t>(j.epochs.begin() + lo, j.epochs.begin() + hi);
    }
  jobs_ = std::move(jobs);
  ready_.assign(jobs_.size(), Batch{});
  done_.assign(jobs_.size(), 0);
  errors_.assign(jobs_.size(), nullptr);
  next_job_ = next_out_ = 0;
  stopping_ = false;
  for (int i = 0; i < opt_.workers; ++i) threads_.emplace_back([this] { worker_loop(); });
}

void DataLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_work_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void DataLoader::worker_loop() {
  for (;;) {
    size_t j;
    {
      std::unique_lock<std::mutex> lk(mu_);
      // Stay at most `prefetch` batches ahead of the consumer, so memory stays bounded.
      cv_work_.wait(lk, [&] {
        return stopping_ || next_job_ >= jobs_.size() || next_job_ < next_out_ + opt_.prefetch;
      });
      if (stopping_ || next_job_ >= jobs_.size()) return;
      j = next_job_++;
    }
    Batch b;
    std::exception_ptr err;
    try {
      b = load(jobs_[j]);
    } catch (...) {
      err = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      ready_[j] = std::move(b);
      errors_[j] = err;
      done_[j] = 1;
    }
    cv_ready_.notify_all();
  }
}

bool DataLoader::next(Batch& out) {
  if (next_out_ >= jobs_.size()) return false;
  size_t j = next_out_;
  if (opt_.workers == 0) {
    out = load(jobs_[j]);
    ++next_out_;
    return true;
  }
  std::unique_lock<std::mutex> lk(mu_);
  cv_ready_.wait(lk, [&] { return done_[j] != 0; });
  if (errors_[j]) {
    auto e = errors_[j];
    lk.unlock();
    stop_workers();
    std::rethrow_exception(e);
  }
  out = std::move(ready_[j]);
  ready_[j] = Batch{};
  ++next_out_;
  lk.unlock();
  cv_work_.notify_all();
  return true;
}

}  // namespace sb
