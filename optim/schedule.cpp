// Learning-rate schedule factors, matching torch.optim.lr_scheduler's closed forms.
#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/errors.h"

namespace sb {

LRSchedule::LRSchedule(ScheduleConfig cfg) : cfg_(std::move(cfg)) {
  const auto& k = cfg_.kind;
  SB_CHECK(k == "const" || k == "step" || k == "multistep" || k == "cosine" || k == "poly",
           "schedule: unknown kind '", k, "' (known: const, step, multistep, cosine, poly)");
  SB_CHECK(k != "step" || cfg_.step_size > 0, "schedule 'step': step_size must be positive, got ", cfg_.step_size);
  SB_CHECK((k != "cosine" && k != "poly") || cfg_.total_steps > 0, "schedule '", k,
           "': total_steps must be positive, got ", cfg_.total_steps);
  SB_CHECK((k != "cosine" && k != "poly") || cfg_.total_steps > cfg_.warmup_steps, "schedule '", k,
           "': total_steps (", cfg_.total_steps, ") must exceed warmup_steps (", cfg_.warmup_steps, ")");
  SB_CHECK(cfg_.warmup_steps >= 0, "schedule: warmup_steps must be >= 0, got ", cfg_.warmup_steps);
  SB_CHECK(cfg_.warmup_start > 0 && cfg_.warmup_start <= 1, "schedule: warmup_start must be in (0, 1], got ",
           cfg_.warmup_start);
  std::sort(cfg_.milestones.begin(), cfg_.milestones.end());
}

float LRSchedule::factor(int64_t step) const {
  // Warm-up first (LinearLR), then the main schedule counted from the end of warm-up, as
  // torch's SequentialLR([LinearLR, main], milestones=[warmup_steps]).
  if (cfg_.warmup_steps > 0 && step < cfg_.warmup_steps)
    return static_cast<float>(cfg_.warmup_start +
                              (1.0 - cfg_.warmup_start) * static_cast<double>(step) / cfg_.warmup_steps);
  int64_t t = step - cfg_.warmup_steps;
  int64_t total = cfg_.total_steps - cfg_.warmup_steps;
  const auto& k = cfg_.kind;
  double f = 1.0;
  if (k == "step") {
    f = std::pow(cfg_.gamma, static_cast<double>(t / cfg_.step_size));
  } else if (k == "multistep") {
    auto passed = std::upper_bound(cfg_.milestones.begin(), cfg_.milestones.end(), t) - cfg_.milestones.begin();
    f = std::pow(cfg_.gamma, static_cast<double>(passed));
  } else if (k == "cosine") {  // CosineAnnealingLR: min + (1 - min)(1 + cos(pi t / T)) / 2
    double r = std::min<double>(t, total) / total;
    f = cfg_.min_factor + (1.0 - cfg_.min_factor) * 0.5 * (1.0 + std::cos(M_PI * r));
  } else if (k == "poly") {  // PolynomialLR: (1 - t / T)^power, 0 from T on
    double r = std::min<double>(t, total) / total;
    f = std::pow(1.0 - r, cfg_.power);
  }
  return static_cast<float>(f);
}

}  // namespace sb
