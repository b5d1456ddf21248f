/*
 * shim.h - a C API over Google Benchmark (1.7), so that benchmark cases can
 * be written in C against <kwq.h> and still get Google Benchmark's
 * iteration control, repetitions, statistics, reporters and JSON output.
 *
 * The API mirrors Google Benchmark one to one, with C names:
 *
 *   registration (before kb_main)     while a case runs
 *   --------------------------------  ----------------------------------
 *   kb_register      RegisterBenchmark  kb_keep_running        KeepRunning
 *   kb_args          Args               kb_keep_running_batch  KeepRunningBatch
 *   kb_arg_names     ArgNames           kb_arg                 range
 *   kb_threads       Threads            kb_thread_index        thread_index
 *   kb_iterations    Iterations         kb_thread_count        threads
 *                                      kb_iterations_done     iterations
 *   kb_repetitions   Repetitions        kb_set_iteration_time  SetIterationTime
 *   kb_min_time      MinTime            kb_counter             counters[...]
 *   kb_time_unit     Unit
 *   kb_manual_time   UseManualTime      kb_set_label           SetLabel
 *   kb_real_time     UseRealTime        kb_skip                SkipWithError
 *   kb_context       AddCustomContext
 *
 * Synchronization: registration and kb_context are for the main thread
 * before kb_main.  Calls on a kb_state are made by the thread that runs that
 * state (Google Benchmark gives each thread of a multi-threaded case its own
 * state); threads that a case spawns itself must not touch the state.
 *
 * Rates: a counter flagged KB_RATE is divided by the case's reported time:
 * the manual time under kb_manual_time, the wall time under kb_real_time.
 * Multi-threaded cases must use one of the two (CPU time of one thread says
 * nothing about the throughput of several).
 */
#ifndef KWQ_BENCH_SHIM_H
#define KWQ_BENCH_SHIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A registered case (a benchmark::internal::Benchmark). */
typedef struct kb_case kb_case;
/* One running instance of a case, per thread (a benchmark::State). */
typedef struct kb_state kb_state;

typedef void kb_fn(kb_state *st, void *arg);

/* Register fn under name; arg is handed to every run, shared by threads. */
kb_case *kb_register(const char *name, kb_fn *fn, void *arg);
/* Add one argument tuple (a run per tuple); n <= 8. */
void kb_args(kb_case *c, size_t n, const int64_t *args);
/* Names of the tuple's members, shown in the case name as "P:1/C:1". */
void kb_arg_names(kb_case *c, size_t n, const char *const *names);
/* Add a thread count (a run per count); the case runs on that many threads. */
void kb_threads(kb_case *c, int threads);
void kb_iterations(kb_case *c, int64_t n);
void kb_repetitions(kb_case *c, int n);
void kb_min_time(kb_case *c, double seconds);
enum kb_unit { KB_NS, KB_US, KB_MS, KB_S };
/* The unit the reported time is printed in (ns by default). */
void kb_time_unit(kb_case *c, enum kb_unit unit);
void kb_manual_time(kb_case *c);
void kb_real_time(kb_case *c);

/* Stamp a key/value into the "context" of every report (before kb_main). */
void kb_context(const char *key, const char *value);

/*
 * Parse Google Benchmark's flags, run the cases, report.  Returns 0, or 1
 * when a flag was not understood or any case called kb_skip (so a smoke test
 * fails on a broken case).
 */
int kb_main(int argc, char **argv);

bool kb_keep_running(kb_state *st);
/* As kb_keep_running, for n iterations at a time (may overshoot by n). */
bool kb_keep_running_batch(kb_state *st, int64_t n);
int64_t kb_arg(const kb_state *st, size_t i);
int kb_thread_index(const kb_state *st);
int kb_thread_count(const kb_state *st);
/* Iterations this thread has run (after the loop: all of them). */
int64_t kb_iterations_done(const kb_state *st);
/* Under kb_manual_time: the time of the iteration just run. */
void kb_set_iteration_time(kb_state *st, double seconds);

enum kb_counter_flags {
	KB_PLAIN = 0,          /* reported as set (summed over threads) */
	KB_RATE = 1u << 0,     /* divided by the reported time: per second */
	KB_INVERT = 1u << 1,   /* reported as 1/x, last: with KB_RATE, seconds per item */
};
void kb_counter(kb_state *st, const char *name, double value, unsigned flags);
void kb_set_label(kb_state *st, const char *label);
/* The run failed: report why, keep its figures out of the results. */
void kb_skip(kb_state *st, const char *why);

#ifdef __cplusplus
}
#endif

#endif /* KWQ_BENCH_SHIM_H */
