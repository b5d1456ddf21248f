// shim.cc - the C API of shim.h over Google Benchmark.
//
// The opaque C handles are the Google Benchmark objects themselves, so a
// call costs one function call and nothing else: kb_keep_running() sits in
// the timed loop of the cheapest cases.

#include "shim.h"

#include <benchmark/benchmark.h>

#include <atomic>
#include <string>
#include <vector>

namespace {

benchmark::internal::Benchmark *B(kb_case *c)
{
	return reinterpret_cast<benchmark::internal::Benchmark *>(c);
}

benchmark::State &S(kb_state *st)
{
	return *reinterpret_cast<benchmark::State *>(st);
}

const benchmark::State &S(const kb_state *st)
{
	return *reinterpret_cast<const benchmark::State *>(st);
}

// Set by any thread of any case; read once all cases have finished.
std::atomic<bool> any_skipped{false};

} // namespace

extern "C" {

kb_case *kb_register(const char *name, kb_fn *fn, void *arg)
{
	auto *b = benchmark::RegisterBenchmark(name, [fn, arg](benchmark::State &state) {
		fn(reinterpret_cast<kb_state *>(&state), arg);
	});
	return reinterpret_cast<kb_case *>(b);
}

void kb_args(kb_case *c, size_t n, const int64_t *args)
{
	B(c)->Args(std::vector<int64_t>(args, args + n));
}

void kb_arg_names(kb_case *c, size_t n, const char *const *names)
{
	B(c)->ArgNames(std::vector<std::string>(names, names + n));
}

void kb_threads(kb_case *c, int threads) { B(c)->Threads(threads); }
void kb_iterations(kb_case *c, int64_t n) { B(c)->Iterations(n); }
void kb_repetitions(kb_case *c, int n) { B(c)->Repetitions(n); }
void kb_min_time(kb_case *c, double seconds) { B(c)->MinTime(seconds); }
void kb_manual_time(kb_case *c) { B(c)->UseManualTime(); }

void kb_time_unit(kb_case *c, enum kb_unit unit)
{
	static const benchmark::TimeUnit units[] = {
		benchmark::kNanosecond, benchmark::kMicrosecond,
		benchmark::kMillisecond, benchmark::kSecond,
	};
	B(c)->Unit(units[unit]);
}
void kb_real_time(kb_case *c) { B(c)->UseRealTime(); }

void kb_context(const char *key, const char *value)
{
	benchmark::AddCustomContext(key, value);
}

int kb_main(int argc, char **argv)
{
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv))
		return 1;
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return any_skipped.load() ? 1 : 0;
}

bool kb_keep_running(kb_state *st) { return S(st).KeepRunning(); }

bool kb_keep_running_batch(kb_state *st, int64_t n)
{
	return S(st).KeepRunningBatch(n);
}

int64_t kb_arg(const kb_state *st, size_t i) { return S(st).range(i); }
int kb_thread_index(const kb_state *st) { return S(st).thread_index(); }
int kb_thread_count(const kb_state *st) { return S(st).threads(); }
int64_t kb_iterations_done(const kb_state *st) { return S(st).iterations(); }

void kb_set_iteration_time(kb_state *st, double seconds)
{
	S(st).SetIterationTime(seconds);
}

void kb_counter(kb_state *st, const char *name, double value, unsigned flags)
{
	int f = benchmark::Counter::kDefaults;
	if (flags & KB_RATE)
		f |= benchmark::Counter::kIsRate;
	if (flags & KB_INVERT)
		f |= benchmark::Counter::kInvert;
	S(st).counters[name] =
		benchmark::Counter(value, static_cast<benchmark::Counter::Flags>(f));
}

void kb_set_label(kb_state *st, const char *label) { S(st).SetLabel(label); }

void kb_skip(kb_state *st, const char *why)
{
	any_skipped.store(true);
	S(st).SkipWithError(why);
}

} // extern "C"
