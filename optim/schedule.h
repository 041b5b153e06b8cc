// Learning-rate schedules as a factor of the base rate per iteration: constant, step,
// multistep, cosine, poly (power 0.9, the segmentation standard), each with optional linear
// warm-up.
#pragma once

#include <string>
#include <vector>

namespace sb {

struct ScheduleConfig {
  std::string kind = "const";   // const | step | multistep | cosine | poly
  int64_t total_steps = 0;      // cosine and poly end here
  int64_t step_size = 0;        // step: decay every step_size iterations
  std::vector<int64_t> milestones;  // multistep: decay at these iterations
  float gamma = 0.1f;           // step, multistep
  float power = 0.9f;           // poly
  float min_factor = 0.f;       // cosine: the floor, as eta_min / base_lr
  int64_t warmup_steps = 0;     // linear warm-up from warmup_start to 1 over these iterations;
                                // the main schedule then starts counting (SequentialLR)
  float warmup_start = 0.1f;
};

class LRSchedule {
 public:
  explicit LRSchedule(ScheduleConfig cfg);  // validates, throwing sb::Error on bad values
  // The factor for iteration `step` (0-based: the factor used for the first update is
  // factor(0)).
  float factor(int64_t step) const;
  const ScheduleConfig& config() const { return cfg_; }

 private:
  ScheduleConfig cfg_;
};

}  // namespace sb
