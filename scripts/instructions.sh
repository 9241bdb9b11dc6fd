#!/usr/bin/env bash
# What each stack costs per request in instructions and in code, counted, not timed: the
# end-to-end setup of scripts/e2e-bench.sh (the release bench server with one tokio worker,
# the mixed auth traffic of scripts/e2e/mix.lua, or with --mix session the session-heavy
# traffic of scripts/e2e/session-mix.lua, from wrk, authwatch exporting to a local rotel
# collector) with the server run under valgrind's callgrind, which counts every
# instruction each thread executes. The counts do not depend on the machine's load or its
# steal, so two builds or two stacks compare to the instruction on this noisy 2-core VM,
# where wall-clock figures move by a few percent from run to run.
#
# For each stack it prints, per request of the measured run (the warm-up and startup are not
# counted):
# - the instructions the tokio worker executed, and the difference from `bare`;
# - the worker's code footprint: the 64-byte lines of machine code it executed at least once
#   per request on average (1 instruction per request), their difference from `bare`'s, and
#   how many of those `bare` does not execute. The last overstates a stack that changes the
#   type of the service hyper serves (`authwatch-wrap`): hyper's connection code is then
#   compiled a second time, at other addresses, and all of it reads as new; the difference
#   of the totals is the net footprint. Between two requests a server runs the kernel's
#   network stack, which evicts the layer's code from the CPU's first-level caches; each
#   extra line is fetched again, so this is what a request costs beyond its instructions
#   (the in-process bench keeps it hot);
# - the instructions of the other threads (authwatch's export, audit and alert threads). They
#   depend partly on time (exports every 5 s), and valgrind serves ~50x fewer requests per
#   second, so this figure overstates them per request; scripts/thread-cpu.sh times them.
# With --functions N, the N functions whose own instructions per request grew the most over
# `bare`'s, for each stack; with --lines N, where the code lines `bare` does not execute are:
# per crate, and the N functions with the most of them (a line belongs to the function that
# executes most of its instructions). With --cache-sim, callgrind also simulates the caches
# (this CPU's sizes) and the worker's first-level instruction and data cache misses per
# request are printed: valgrind sees no kernel code, so the misses the network stack's evictions cause are
# not in them, but the difference between two stacks is what each adds.
#
# --mix, --sign-in-work-us and --session-work-us are scripts/e2e-bench.sh's: the traffic, and
# the CPU time each sign-in and each session check spends. That work is a spin on the thread's
# CPU clock, so its instructions are timed, not counted: they vary with valgrind's speed and
# the machine's load, and the counts are exact only with both at 0 (the default).
#
# Usage: scripts/instructions.sh [--stacks "bare authwatch trace-layer"] [--duration SECS]
#                                [--mix auth|session] [--sign-in-work-us N] [--session-work-us N]
#                                [--functions N] [--lines N] [--cache-sim] [--bin PATH]
#        (defaults: bare authwatch trace-layer, 10 s each, the auth mix, no CPU work, no
#        function list; ~1.5 minutes).
# Installs valgrind (Debian package) when missing. Raw profiles: target/instructions/<stack>/
# (wrk.json: the run's wrk summary, with the mix and the work it ran with).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

STACKS="bare authwatch trace-layer"
SECS=10
FUNCS=0
LINES=0
CACHE=no
MIX=auth
WORK=0
SESSION_WORK=0
BIN=$ROOT/target/release/examples/bench_server
while [ $# -gt 0 ]; do
  case $1 in
    --stacks) STACKS=$2; shift 2 ;;
    --duration) SECS=$2; shift 2 ;;
    --functions) FUNCS=$2; shift 2 ;;
    --lines) LINES=$2; shift 2 ;;
    --cache-sim) CACHE=yes; shift ;;
    --mix) MIX=$2; shift 2 ;;
    --sign-in-work-us) WORK=$2; shift 2 ;;
    --session-work-us) SESSION_WORK=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    *) echo "unknown argument $1"; exit 2 ;;
  esac
done
case " $STACKS " in *" bare "*) ;; *) STACKS="bare $STACKS" ;; esac

say() { printf 'instructions: %s\n' "$*"; }
# shellcheck source=e2e/harness.sh
. scripts/e2e/harness.sh
MIX_LUA=$(mix_script "$MIX")
install_debs wrk valgrind
scripts/test-deps.sh >/dev/null
[ -x "$BIN" ] || cargo build --release --locked --example bench_server

OUT=$ROOT/target/instructions
rm -rf "$OUT" && mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
start_collector
WAIT_TRIES=600 # valgrind takes a few seconds to start the server

for stack in $STACKS; do
  dir=$OUT/$stack
  mkdir -p "$dir"
  # Counting starts off (the startup and the warm-up are not measured); --dump-instr keeps
  # the instruction addresses, which the code footprint is computed from.
  SERVER_WRAP=(valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes
    --dump-instr=yes "--cache-sim=$CACHE" "--callgrind-out-file=$dir/callgrind.out")
  start_server "$BIN" "$stack" "$WORK" "$dir/server"
  callgrind_control -i on "$SERVER" >/dev/null 2>&1
  line=$(taskset -c 1 wrk -t1 -c32 -d"${SECS}s" -s "$MIX_LUA" "http://127.0.0.1:$PORT" | grep '^{')
  echo "{\"mix\":\"$MIX\",\"sign_in_work_us\":$WORK,\"session_work_us\":$SESSION_WORK,${line#\{}" >"$dir/wrk.json"
  callgrind_control -i off "$SERVER" >/dev/null 2>&1
  kill -INT "$SERVER"
  wait "$SERVER" || { echo "the server under valgrind failed:"; tail -20 "$dir/server.err"; exit 1; }
  n=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["requests"])' "$dir/wrk.json")
  say "$stack: $n requests"
  [ "$n" -gt 0 ] || { echo "the server under valgrind answered no request"; exit 1; }
done

python3 - "$OUT" "$FUNCS" "$LINES" "$MIX" "$WORK" "$SESSION_WORK" $STACKS <<'EOF'
import collections, glob, json, os, re, sys

out, nfuncs, nlines, stacks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[7:]
mix, work, session_work = sys.argv[4:7]
traffic = {'auth': 'mixed auth traffic', 'session': 'session-heavy traffic'}[mix]
if work != '0' or session_work != '0':
    traffic += f', sign-in CPU {work} µs, session check CPU {session_work} µs'

def parse(path):
    """Self instructions per instruction address, and each address's function."""
    names, ir, fn_of = {}, collections.Counter(), {}
    fn, last, call = None, 0, False
    with open(path) as f:
        for line in f:
            head = line[:4]
            if head in ('fn=(', 'cfn='):
                m = re.match(r'c?fn=\((\d+)\)(?: (.*))?', line.rstrip('\n'))
                if m.group(2) is not None:
                    names[m.group(1)] = m.group(2)
                if head == 'fn=(':
                    fn = names[m.group(1)]
                continue
            if line.startswith('calls='):
                call = True  # the next line is the call's inclusive cost: not this function's
                continue
            c = line[:1]
            if c and c in '0123456789+-*':
                parts = line.split()
                p = parts[0]
                if p.startswith('0x'):
                    last = int(p, 16)
                elif p[0] == '+':
                    last += int(p[1:])
                elif p[0] == '-':
                    last -= int(p[1:])
                elif p != '*':
                    last = int(p)
                if call:
                    call = False
                    continue
                if len(parts) > 2:
                    ir[last] += int(parts[2])
                    fn_of[last] = fn
    return ir, fn_of

def events(path):
    """The file's totals per event (Ir, and the cache events with --cache-sim)."""
    names = []
    with open(path) as f:
        for line in f:
            if line.startswith('events:'):
                names = line.split()[1:]
            elif line.startswith('totals:'):
                return dict(zip(names, map(int, line.split()[1:])))
    return {}

res = {}
for s in stacks:
    d = os.path.join(out, s)
    n = json.load(open(os.path.join(d, 'wrk.json')))['requests']
    ev = {f: events(f) for f in glob.glob(os.path.join(d, 'callgrind.out-*'))}
    ev = {f: e for f, e in ev.items() if e.get('Ir', 0) > 0}
    worker = max(ev, key=lambda f: ev[f]['Ir'])  # the one tokio worker serves every request
    ir, fn_of = parse(worker)
    funcs = collections.Counter()
    owner = collections.defaultdict(collections.Counter)  # line -> function -> instructions
    for a, v in ir.items():
        funcs[fn_of[a]] += v / n
        owner[a >> 6][fn_of[a]] += v
    w = ev[worker]
    misses = None
    if 'I1mr' in w:
        misses = (w['I1mr'] / n, (w['D1mr'] + w['D1mw']) / n,
                  (w['ILmr'] + w['DLmr'] + w['DLmw']) / n)
    res[s] = dict(n=n, worker=w['Ir'] / n,
                  other=sum(e['Ir'] for f, e in ev.items() if f != worker) / n,
                  hot={l for l, fs in owner.items() if sum(fs.values()) >= n}, funcs=funcs,
                  misses=misses,
                  owner=owner)

b = res['bare']
counts = ' / '.join(f"{s} {r['n']:,}" for s, r in res.items())
print(f"\nPer request, {traffic} ({counts} requests):")
print(f"{'stack':<32} {'worker instr.':>13} {'vs bare':>8} {'code lines':>10} {'vs bare':>8} {'not in bare':>17} {'other threads':>13}")
for s, r in res.items():
    extra = len(r['hot'] - b['hot'])
    kib = f"{extra:,} ({extra * 64 / 1024:.1f} KiB)"
    print(f"{s:<32} {r['worker']:>13,.0f} {r['worker'] - b['worker']:>+8,.0f} {len(r['hot']):>10,}"
          f" {len(r['hot']) - len(b['hot']):>+8,} {kib:>17} {r['other']:>13,.0f}")
if b['misses']:
    print("\nSimulated cache misses of the worker per request (difference from bare):")
    print(f"{'stack':<32} {'L1 instr.':>16} {'L1 data':>16} {'last level':>14}")
    for s, r in res.items():
        (i1, d1, ll), (bi, bd, bl) = r['misses'], b['misses']
        print(f"{s:<32} {f'{i1:,.0f} ({i1 - bi:+,.0f})':>16} {f'{d1:,.0f} ({d1 - bd:+,.0f})':>16}"
              f" {f'{ll:,.1f} ({ll - bl:+,.1f})':>14}")
if nfuncs:
    for s, r in res.items():
        if s == 'bare':
            continue
        print(f"\n{s}: the {nfuncs} functions whose own instructions per request grew most over bare's")
        grown = sorted(r['funcs'], key=lambda k: b['funcs'][k] - r['funcs'][k])
        for k in grown[:nfuncs]:
            print(f"  {r['funcs'][k] - b['funcs'][k]:>+8,.0f}  {(k or '?')[:150]}")

def crate(f):
    """The crate of a demangled function: the path's first segment; for `<T as Trait>::f`, the
    type's, or the trait's when the type has no path (a generic parameter, a primitive, a
    slice); drop glue, the dropped type's; C functions (no path) are `libc`."""
    f = f or '?'
    if f.startswith('core::ptr::drop_in_place<'):
        f = f[len('core::ptr::drop_in_place<'):]
    m = re.match(r'<+[&*]*(?:(?:mut|dyn|const) )*([^<>]*?)(?:<[^ ]*)? as ([^<>]*)', f)
    if m:
        f = m.group(1) if '::' in m.group(1) else m.group(2)
    f = re.sub(r'^(mut |dyn |const )+', '', f.lstrip('<&*['))
    return f.split('::', 1)[0] if '::' in f else 'libc'

if nlines:
    for s, r in res.items():
        if s == 'bare':
            continue
        extra = r['hot'] - b['hot']
        by_fn = collections.Counter(r['owner'][l].most_common(1)[0][0] for l in extra)
        by_crate = collections.Counter()
        for f, c in by_fn.items():
            by_crate[crate(f)] += c
        print(f"\n{s}: its {len(extra):,} code lines not in bare, per crate")
        for k, c in by_crate.most_common():
            print(f"  {c:>5}  {k}")
        print(f"{s}: the {nlines} functions with the most of them")
        for k, c in by_fn.most_common(nlines):
            print(f"  {c:>5}  {(k or '?')[:150]}")
EOF
