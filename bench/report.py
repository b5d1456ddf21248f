#!/usr/bin/python3
"""Tables and plots from a kwq-bench result file (Google Benchmark JSON).

    report.py RESULT.json [--plots DIR] [--markdown FILE]

Prints one table per workload: implementation, figure, value, and the
ratio to the mutex reference and to the best floor.  Ratios read the same
way for every figure: above 1 is better than the reference (a higher rate,
or a lower time, latency, memory or CPU cost).  The priority mix and the
named-queue tables compare with a baseline of their own instead of a floor:
the same implementation with every add at priority 0, and on an unnamed
queue (W1 and W2 of the same run).

With --plots, draws with gnuplot into DIR, named after the result file:
<stem>-w2.svg (W2 throughput against threads, per implementation) and
<stem>-w4.svg (W4 wake latency percentiles).  With --markdown, writes the
results page (results/RESULTS.md) for the run.

Figures come from the run's medians when it had repetitions (Google
Benchmark's own aggregates), else from its single run; this script does no
statistics of its own.  The client-go row is external (bench/external/
client-go.json), measured elsewhere with the same workload definitions.

Standard library only: it runs under /usr/bin/python3 on a bare Debian.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
EXTERNAL = os.path.join(HERE, "external", "client-go.json")

REFERENCE = "mutex"
FLOOR_PREFIX = "floor_"

# Workloads in print order: key, title, what it measures, and the header
# of the last column: the ratio to the best floor, or to the figure's own
# baseline (Figure.base).
WORKLOADS = [
    ("W1", "W1 cycle", "one thread: add, get, done", "x floor"),
    ("W1instr", "W1 instructions",
     "instructions per W1 cycle under callgrind (bench/w1_instructions, after a "
     "warm-up); x unnamed: against the same design's unnamed count", "x unnamed"),
    ("W2", "W2 pipeline", "P producers, C workers; adds/s and gets/s", "x floor"),
    ("W3", "W3 hot keys", "4 producers on 16 keys, 2 workers, 1 s", "x floor"),
    ("W4", "W4 wake latency", "add to a parked worker, 20 us apart", "x floor"),
    ("W5", "W5 delayed adds",
     "the producer calls add_after(key i, 1 ms) for 100,000 keys; one worker gets them all",
     "x floor"),
    ("W6", "W6 rate-limited cycle",
     "1,000,000 pairs add_rate_limited(k), forget(k) over 1024 keys; one worker drains",
     "x floor"),
    ("prio", "priority mix",
     "W2 at K=100000 P=C=4 with 10% of the adds at priority 10; "
     "x prio 0: against every add at priority 0", "x prio 0"),
    ("named", "named-queue overhead",
     "W1, and W2 at K=100000 P=C=4, on a named queue (it keeps metrics); "
     "x unnamed: against the same run's W1 and W2", "x unnamed"),
    ("waits", "W2 with waits pending",
     "W2 at K=100000 with 1,000 other keys waiting on add_after(1 h); "
     "x no waits: against the same run's W2 (unnamed, or named for the named rows)",
     "x no waits"),
    ("W7", "W7 controller steady state",
     "a named queue, exponential(1 ms, 1 s) limiter, 1,000 waits pending, W2's "
     "producers at K=100000, every 16th get of a worker retried rate-limited; "
     "x W2: against the same run's unnamed W2 at the same (P,C)", "x W2"),
    ("W8", "W8 batches",
     "W2 at K=100000 with producers calling kwq_add_many of 32 consecutive keys and "
     "workers kwq_get_batch(32) and kwq_done_many; items/s added and got; "
     "x W2: against the same run's unnamed W2 at the same (P,C)", "x W2"),
    ("coalesce", "producers-only coalesce", "P producers re-adding 16 queued keys", "x floor"),
    ("memory", "memory", "RSS per queued key, 1,000,000 keys", "x floor"),
    ("idle", "idle cost", "8 workers blocked in get on an empty queue", "x floor"),
]

UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


class Figure:
    """One measured value: workload, figure name, implementation."""

    def __init__(self, workload, name, impl, value, unit, better, order, plot=None):
        self.workload = workload
        self.name = name
        self.impl = impl
        self.value = value
        self.unit = unit  # rate, ns, s, bytes, us_per_s, per_s, count
        self.better = better  # "higher", "lower", or None: no ratios
        self.order = order  # sort key of the figure within its workload
        self.plot = plot  # e.g. ("W2", K, threads, "adds") for plotting
        self.base = None  # the Figure it is compared with, where not a floor

    def copy(self, **kw):
        f = Figure(self.workload, self.name, self.impl, self.value, self.unit,
                   self.better, self.order, self.plot)
        for k, v in kw.items():
            setattr(f, k, v)
        return f


def parse_name(run_name):
    """'W2_pipeline/mutex/P:1/C:1/K:64/...' -> ('W2', 'mutex', {'P': 1, ...}).

    'named_W1/mutex' -> ('named', 'mutex', {'of': 'W1'}): the named-queue
    variant of a workload."""
    parts = run_name.split("/")
    workload = parts[0].split("_")[0]
    params = {}
    if parts[0] in ("W2_waits", "named_W2_waits"):
        workload = "waits"
        params["named"] = parts[0].startswith("named")
    elif workload == "named":
        params["of"] = parts[0].split("_")[1]
    for p in parts[2:]:
        if ":" in p:
            k, v = p.split(":", 1)
            try:
                params[k] = int(v)
            except ValueError:
                params[k] = v
    return workload, parts[1], params


def pick_runs(benchmarks):
    """The median aggregate of each run, or its only repetition."""
    chosen = {}
    for b in benchmarks:
        if b.get("error_occurred"):
            continue
        name = b.get("run_name", b["name"])
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                chosen[name] = b
        elif name not in chosen and b.get("repetitions", 1) <= 1:
            chosen[name] = b
    return list(chosen.values())


def figures_from_results(benchmarks):
    figs = []
    for b in pick_runs(benchmarks):
        wl, impl, p = parse_name(b.get("run_name", b["name"]))
        if wl == "W1":
            ns = b["real_time"] * UNIT_NS[b.get("time_unit", "ns")]
            figs.append(Figure(wl, "ns per cycle", impl, ns, "ns", "lower", 0))
        elif wl == "W2":
            for i, what in enumerate(("adds", "gets")):
                name = "%s/s K=%d P=%d C=%d" % (what, p["K"], p["P"], p["C"])
                order = (p["K"], i, p["P"])
                figs.append(Figure(wl, name, impl, b[what], "rate", "higher", order,
                                   plot=(p["K"], p["P"], what)))
        elif wl == "W3":
            figs.append(Figure(wl, "adds/s", impl, b["adds"], "rate", "higher", 0))
            figs.append(Figure(wl, "gets/s", impl, b["gets"], "rate", "higher", 1))
        elif wl == "W4":
            for i, q in enumerate(("p50", "p90", "p99")):
                figs.append(Figure(wl, q, impl, b[q], "s", "lower", i, plot=q))
        elif wl == "W5":
            figs.append(Figure(wl, "add_after calls/s", impl, b["calls"], "rate", "higher", 0))
            figs.append(Figure(wl, "first call to last get", impl, b["all_got_s"], "s",
                               "lower", 1))
        elif wl == "W6":
            ns = b["real_time"] * UNIT_NS[b.get("time_unit", "ns")]
            figs.append(Figure(wl, "ns per pair", impl, ns, "ns", "lower", 0))
            figs.append(Figure(wl, "items got", impl, b["got"], "count", None, 1))
        elif wl == "prio":
            for i, what in enumerate(("adds", "gets")):
                mix = "priority 0 only" if p["high"] == 0 else "%d%% at priority 10" % p["high"]
                name = "%s/s, %s" % (what, mix)
                figs.append(Figure(wl, name, impl, b[what], "rate", "higher",
                                   (p["K"], p["P"], i, p["high"]), plot=(what, p["high"])))
        elif wl == "named":
            for f in base_figures(p["of"], b, impl, p):
                figs.append(f.copy(workload=wl, name=f.name + ", named",
                                   order=(p["of"], f.order, 1), plot=(p["of"], f.name)))
        elif wl in ("waits", "W7", "W8"):
            tag = ", named" if p.get("named") else ""
            for i, what in enumerate(("adds", "gets")):
                name = "%s/s P=%d C=%d%s" % (what, p["P"], p["C"], tag)
                figs.append(Figure(wl, name, impl, b[what], "rate", "higher",
                                   (bool(tag), i, p["P"]),
                                   plot=("named" if tag else "W2",
                                         "%s/s K=%d P=%d C=%d" % (what, p["K"], p["P"], p["C"]))))
        elif wl == "coalesce":
            t = b.get("threads", 1)
            figs.append(Figure(wl, "adds/s P=%d" % t, impl, b["adds"], "rate", "higher", t))
        elif wl == "memory":
            figs.append(Figure(wl, "bytes per key", impl, b["bytes_per_key"], "bytes", "lower", 0))
        elif wl == "idle":
            figs.append(Figure(wl, "CPU per second", impl, b["cpu_us_per_s"], "us_per_s", "lower", 0))
            figs.append(Figure(wl, "context switches/s", impl, b["switches_per_s"], "per_s", "lower", 1))
    return with_baselines(figs)


def base_figures(of, b, impl, p):
    """The W1 or W2 figures of a named run, as the unnamed case names them."""
    if of == "W1":
        ns = b["real_time"] * UNIT_NS[b.get("time_unit", "ns")]
        return [Figure("W1", "ns per cycle", impl, ns, "ns", "lower", 0)]
    return [Figure("W2", "%s/s K=%d P=%d C=%d" % (what, p["K"], p["P"], p["C"]), impl,
                   b[what], "rate", "higher", i) for i, what in enumerate(("adds", "gets"))]


def with_baselines(figs):
    """Link the priority mix and the named figures to their baselines, and
    put the unnamed W1/W2 figures next to the named ones."""
    by = {(f.workload, f.impl, f.plot if f.workload in ("prio", "named") else f.name): f
          for f in figs}
    out = list(figs)
    for f in figs:
        if f.workload == "prio" and f.plot[1] != 0:
            f.base = by.get(("prio", f.impl, (f.plot[0], 0)))
        elif f.workload in ("waits", "W7", "W8"):
            of, name = f.plot
            if of == "named":  # named_W2 of the same (P,C)
                f.base = by.get(("named", f.impl, ("W2", name)))
            else:
                f.base = by.get(("W2", f.impl, name))
        elif f.workload == "named":
            of, name = f.plot
            plain = by.get((of, f.impl, name))
            if plain is not None:
                f.base = plain.copy(workload="named", name="%s %s, unnamed" % (of, name),
                                    order=f.order[:2] + (0,), plot=None)
                out.append(f.base)
            f.name = "%s %s" % (of, f.name)
    return out


def load_external(path=EXTERNAL):
    """The external reference rows, as Figures."""
    if not os.path.exists(path):
        return None, []
    with open(path) as f:
        ext = json.load(f)
    name = ext["name"]
    fg = ext["figures"]
    figs = [Figure("W1", "ns per cycle", name, fg["W1"]["ns_per_cycle"], "ns", "lower", 0)]
    for row in fg["W2"]:
        n = "adds/s K=%d P=%d C=%d" % (row["K"], row["P"], row["C"])
        figs.append(Figure("W2", n, name, row["adds_per_s"], "rate", "higher",
                           (row["K"], 0, row["P"]), plot=(row["K"], row["P"], "adds")))
    figs.append(Figure("W3", "adds/s", name, fg["W3"]["adds_per_s"], "rate", "higher", 0))
    figs.append(Figure("W3", "gets/s", name, fg["W3"]["gets_per_s"], "rate", "higher", 1))
    for i, q in enumerate(("p50", "p90", "p99")):
        figs.append(Figure("W4", q, name, fg["W4"][q + "_s"], "s", "lower", i, plot=q))
    if "W5" in fg:
        figs.append(Figure("W5", "add_after calls/s", name, fg["W5"]["calls_per_s"], "rate",
                           "higher", 0))
        figs.append(Figure("W5", "first call to last get", name, fg["W5"]["all_got_s"], "s",
                           "lower", 1))
    if "W6" in fg:
        figs.append(Figure("W6", "ns per pair", name, fg["W6"]["ns_per_pair"], "ns", "lower", 0))
    return ext, figs


def si(v, unit=""):
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return "%.2f %s%s" % (v / scale, prefix, unit)
    return "%.3g %s" % (v, unit) if unit else "%.3g" % v


def fmt(v, unit):
    if unit == "rate":
        return si(v, "/s")
    if unit == "per_s":
        return "%.3g /s" % v
    if unit == "ns":
        return "%.1f ns" % v
    if unit == "s":
        if v >= 1e-3:
            return "%.2f ms" % (v * 1e3)
        return "%.1f us" % (v * 1e6)
    if unit == "bytes":
        return "%.1f B" % v
    if unit == "us_per_s":
        return "%.1f us/s" % v
    return "%.4g" % v


def ratio(fig, ref):
    """How many times better than ref (> 1 is better), or None."""
    if ref is None or fig.better is None or ref.value <= 0 or fig.value <= 0:
        return None
    if fig.better == "higher":
        return fig.value / ref.value
    return ref.value / fig.value


def best(figs):
    if not figs:
        return None
    if figs[0].better == "higher":
        return max(figs, key=lambda f: f.value)
    return min(figs, key=lambda f: f.value)


def impl_order(impl):
    if impl == REFERENCE:
        return (0, impl)
    if impl.startswith(FLOOR_PREFIX):
        return (2, impl)
    if "external" in impl:
        return (3, impl)
    return (1, impl)


def table_rows(figs, workload):
    """[(impl, figure, value, x mutex, x floor or x baseline)] for one workload."""
    mine = [f for f in figs if f.workload == workload]
    names = sorted({(f.order, f.name) for f in mine})
    rows = []
    for _, name in names:
        group = sorted((f for f in mine if f.name == name), key=lambda f: impl_order(f.impl))
        ref = next((f for f in group if f.impl == REFERENCE), None)
        floor = best([f for f in group if f.impl.startswith(FLOOR_PREFIX)])
        for f in group:
            rm, rf = ratio(f, ref), ratio(f, f.base if f.base is not None else floor)
            rows.append((f.impl, name, fmt(f.value, f.unit),
                         "" if rm is None else "%.2fx" % rm,
                         "" if rf is None else "%.2fx" % rf))
    return rows


def head(last):
    return ("implementation", "figure", "value", "x mutex", last)


def print_tables(figs, out=sys.stdout, mode=None):
    if mode is not None and "full" not in mode:
        print("mode: %s -- scaled-down work, figures not comparable with a full run"
              % mode, file=out)
    for key, title, what, last in WORKLOADS:
        rows = table_rows(figs, key)
        if not rows:
            continue
        HEAD = head(last)
        w = [max(len(r[i]) for r in rows + [HEAD]) for i in range(5)]
        print("\n%s -- %s" % (title, what), file=out)
        line = "  ".join(h.ljust(w[i]) if i < 2 else h.rjust(w[i]) for i, h in enumerate(HEAD))
        print(line, file=out)
        print("-" * len(line), file=out)
        prev = None
        for r in rows:
            if prev is not None and r[1] != prev:
                print("", file=out)
            prev = r[1]
            print("  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i])
                            for i, c in enumerate(r)).rstrip(), file=out)
    print("\nx mutex, x floor: times better than the mutex reference and than the "
          "best floor at the same figure (> 1 is better); x prio 0 and x unnamed: "
          "than the same implementation with every add at priority 0, and on an "
          "unnamed queue.", file=out)


def markdown_tables(figs):
    out = []
    for key, title, what, last in WORKLOADS:
        rows = table_rows(figs, key)
        if not rows:
            continue
        out.append("### %s\n\n%s.\n" % (title, what[0].upper() + what[1:]))
        out.append("| " + " | ".join(head(last)) + " |")
        out.append("|---|---|--:|--:|--:|")
        for r in rows:
            out.append("| " + " | ".join(r) + " |")
        out.append("")
    return "\n".join(out)


# ---- plots -----------------------------------------------------------------

def gnuplot(script, path):
    if shutil.which("gnuplot") is None:
        print("report.py: gnuplot not found, no %s" % path, file=sys.stderr)
        return False
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    return True


def plot_w2(figs, path, title):
    impls = sorted({f.impl for f in figs if f.workload == "W2"}, key=impl_order)
    panels = []
    for k in (64, 100000):
        for what in ("adds", "gets"):
            series = []
            for impl in impls:
                pts = sorted((f.plot[1], f.value) for f in figs
                             if f.workload == "W2" and f.impl == impl and f.plot
                             and f.plot[0] == k and f.plot[2] == what)
                if pts:
                    series.append((impl, pts))
            panels.append((k, what, series))
    if not any(s for _, _, s in panels):
        return False
    lines = [
        "set terminal svg size 1200,760 dynamic noenhanced font 'sans,11' background rgb 'white'",
        "set output '%s'" % path,
        "set multiplot layout 2,2 title \"%s\"" % title.replace('"', "'"),
        "set logscale x 2", "set xrange [0.8:10]", "set xtics (1,2,4,8)",
        "set xlabel 'producers = workers (P = C)'", "set grid",
        "set key outside right top vertical font ',9'", "set yrange [0:*]",
    ]
    for n, (k, what, series) in enumerate(panels):
        blocks = []
        for i, (impl, pts) in enumerate(series):
            lines.append("$d%d_%d << EOD" % (n, i))
            lines += ["%d %.6g" % (x, y / 1e6) for x, y in pts]
            lines.append("EOD")
            # One colour per implementation in every panel; the external row
            # solid grey with open points (some SVG renderers mangle dashes).
            if "external" in impl:
                style = "lc rgb '#888888' pt 6"
            else:
                style = "lt %d pt 7" % (impls.index(impl) + 1)
            blocks.append("$d%d_%d using 1:2 with linespoints lw 2 ps 0.8 %s title '%s'"
                          % (n, i, style, impl))
        lines.append("set title 'K = %d: %s/s'" % (k, what))
        lines.append("set ylabel 'M %s/s'" % what)
        if blocks:
            lines.append("plot " + ", ".join(blocks))
        else:
            # A filtered run may leave a panel empty: gnuplot cannot
            # autoscale nothing, so the panel gets a fixed range and a note.
            lines += ["set yrange [0:1]", "set label 1 'not run' at graph 0.5,0.5 center",
                      "plot NaN notitle", "unset label 1", "set yrange [0:*]"]
    lines.append("unset multiplot")
    return gnuplot("\n".join(lines) + "\n", path)


def plot_w4(figs, path, title):
    impls = sorted({f.impl for f in figs if f.workload == "W4"}, key=impl_order)
    if not impls:
        return False
    vals = {(f.impl, f.plot): f.value for f in figs if f.workload == "W4"}
    lines = [
        "set terminal svg size 800,480 dynamic noenhanced font 'sans,11' background rgb 'white'",
        "set output '%s'" % path,
        "set title \"%s\"" % title.replace('"', "'"),
        "set style data histograms", "set style histogram clustered gap 1",
        "set style fill solid 0.8 border -1", "set boxwidth 0.9",
        "set logscale y", "set ylabel 'add-to-get latency (us, log scale)'",
        "set grid ytics", "set key top left",
        "$w4 << EOD",
    ]
    for impl in impls:
        row = [vals.get((impl, q), float("nan")) * 1e6 for q in ("p50", "p90", "p99")]
        lines.append('"%s" %s' % (impl, " ".join("%.6g" % v for v in row)))
    lines.append("EOD")
    lines.append("plot $w4 using 2:xtic(1) title 'p50', '' using 3 title 'p90', "
                 "'' using 4 title 'p99'")
    return gnuplot("\n".join(lines) + "\n", path)


# ---- results page ----------------------------------------------------------

def markdown_page(result_path, data, figs, ext, plots):
    ctx = data.get("context", {})
    stem = os.path.basename(result_path)
    reps = max((b.get("repetitions", 1) for b in data.get("benchmarks", [])), default=1)
    out = ["# kwq benchmark results", "",
           "Generated by `bench/run` from [`%s`](%s); re-running `bench/run` "
           "replaces this page." % (stem, stem), "",
           "## Run", "",
           "| | |", "|---|---|",
           "| date | %s |" % ctx.get("date", "?"),
           "| commit | `%s` |" % ctx.get("kwq_commit", "?"),
           "| machine | %s, %s CPUs at %s MHz, %s |" % (
               ctx.get("cpu_model", "?"), ctx.get("num_cpus", "?"),
               ctx.get("mhz_per_cpu", "?"), ctx.get("kernel", "?")),
           "| load average at start | %s |" % ", ".join(
               "%.2f" % x for x in ctx.get("load_avg", [])),
           "| compiler | %s, `%s`, %s build |" % (
               ctx.get("kwq_compiler", "?"), ctx.get("kwq_cflags", "?"),
               ctx.get("kwq_build_type", "?")),
           "| implementations | %s |" % ctx.get("kwq_rows", "?"),
           "| repetitions | %d per case; figures are medians |" % reps
           if reps > 1 else "| repetitions | 1 per case |",
           "| mode | %s |" % ctx.get("kwq_mode", "?"),
           ""]
    load, cpus = ctx.get("load_avg", [0])[:1] or [0], ctx.get("num_cpus", 1)
    if load[0] > 0.5 * cpus:
        out += ["**The machine was busy when this run started** (load %.2f on %s "
                "CPUs): other work shared the cores, which shows most in W4's "
                "tail and in the many-thread W2 rows. Re-run on an idle machine "
                "before drawing conclusions." % (load[0], cpus), ""]
    if ext is not None:
        out += ["The `%s` row is **external**: %s. It was measured on a "
                "different machine (%s), so read its ratios as indicative."
                % (ext["name"], ext["source"], ext["machine"]), ""]
    out += ["Ratios: **x mutex** and **x floor** say how many times better a "
            "figure is than the mutex reference and than the best floor for the "
            "same figure (> 1 is better: a higher rate, or a lower time, "
            "latency, memory or CPU cost). The floors carry bare pointers with "
            "no dedup: `floor_ck_ring` is ConcurrencyKit's MPMC ring (run only "
            "where threads <= cores), `floor_mutex_fifo` a mutex and condition "
            "variable FIFO. At K=64 a keyed queue can beat its floor on adds/s, "
            "because most adds coalesce; gets/s shows the work actually handed "
            "out.", ""]
    for p in plots:
        out += ["![%s](%s)" % (os.path.basename(p), os.path.basename(p)), ""]
    out += ["The priority mix and named-queue tables compare each figure with "
            "the same implementation's baseline in the same run (**x prio 0**: "
            "every add at priority 0; **x unnamed**: W1 and W2 on an unnamed "
            "queue), not with a floor; below 1 is the cost of the priorities "
            "or of the metrics a named queue keeps.", ""]
    out += ["The targets set for the sharded design, which of them this "
            "machine's runs meet, and the measured cause of each miss: "
            "[TARGETS.md](TARGETS.md) (kept by hand, not generated).", ""]
    out += ["## Tables", "", markdown_tables(figs)]
    out += ["## Reproduce", "",
            "```sh",
            "git checkout %s" % ctx.get("kwq_commit", "?").replace("-dirty", ""),
            "bench/run                 # installs what is missing (as root), builds, runs, plots",
            "bench/compare %s OTHER.json   # Google Benchmark's compare.py" % ("results/" + stem),
            "```", "",
            "These machines are shared and noisy: compare medians of runs made "
            "on an idle machine, and prefer `bench/compare` (a Mann-Whitney U "
            "test over the repetitions) to eyeballing single figures.", ""]
    return "\n".join(out)


def instruction_figures(data):
    """The callgrind counts bench/run records (instructions_per_cycle)."""
    per = data.get("instructions_per_cycle", {}).get("cases", {})
    figs = {}
    order = {"unnamed": 0, "named": 1, "batch": 2}
    for name, v in per.items():
        parts = name.split("/")  # W1/<impl>[/named|/batch]
        if len(parts) < 2:
            continue
        mode = parts[2] if len(parts) > 2 else "unnamed"
        if mode not in order:
            continue
        label = "in batches of 32, per item" if mode == "batch" else mode
        figs[(parts[1], mode)] = Figure("W1instr", label, parts[1], float(v), "count",
                                        "lower", order[mode])
    for (impl, mode), f in figs.items():
        if mode != "unnamed" and (impl, "unnamed") in figs:
            f.base = figs[(impl, "unnamed")]
    return list(figs.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result")
    ap.add_argument("--plots", metavar="DIR")
    ap.add_argument("--markdown", metavar="FILE")
    ap.add_argument("--no-external", action="store_true")
    a = ap.parse_args()

    with open(a.result) as f:
        data = json.load(f)
    figs = figures_from_results(data.get("benchmarks", [])) + instruction_figures(data)
    ext, ext_figs = (None, []) if a.no_external else load_external()
    # The external row is measured at full scale only.
    if "full" not in data.get("context", {}).get("kwq_mode", "full"):
        ext, ext_figs = None, []
    figs += ext_figs
    if not figs:
        print("report.py: no results in %s" % a.result, file=sys.stderr)
        return 1

    print_tables(figs, mode=data.get("context", {}).get("kwq_mode"))

    plots = []
    if a.plots:
        stem = os.path.splitext(os.path.basename(a.result))[0]
        ctx = data.get("context", {})
        sub = "%s, %s CPUs, %s" % (ctx.get("cpu_model", "?"), ctx.get("num_cpus", "?"),
                                   ctx.get("kwq_commit", "?")[:12])
        p = os.path.join(a.plots, stem + "-w2.svg")
        agg = "medians" if any(b.get("run_type") == "aggregate"
                               for b in data.get("benchmarks", [])) else "one run"
        if plot_w2(figs, p, "W2 pipeline throughput (%s)\\n%s" % (agg, sub)):
            plots.append(p)
        p = os.path.join(a.plots, stem + "-w4.svg")
        if plot_w4(figs, p, "W4 wake latency (%s)\\n%s" % (agg, sub)):
            plots.append(p)
        for p in plots:
            print("plot: %s" % p)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(markdown_page(a.result, data, figs, ext, plots))
        print("page: %s" % a.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
