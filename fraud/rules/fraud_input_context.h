// Fills the request part of an EvalContext from the gateway's FraudInput
// (fraud/fraud_filter.h). Kept apart from the rule language so that the
// language builds without the gateway's protos and Asio (the fuzzer does).
//
// Thread-safety: pure function.
#pragma once

#include "fraud/fraud_filter.h"
#include "fraud/rules/eval_context.h"

namespace recharge::rules {

// Points the string fields of *context into `input` and sets the numbers
// (amount_usd = amount_usd_cents / 100). Leaves the counters and the flags
// alone: the engine sets those. `input` must outlive every use of *context.
// Allocates nothing.
void FillEvalContext(const FraudInput& input, EvalContext* context);

}  // namespace recharge::rules
