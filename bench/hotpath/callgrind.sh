#!/usr/bin/env bash
# Instructions per request and per pick, counted by callgrind on the native
# build of the filter (bench/hotpath). Runs the three valgrind commands listed
# in README.md and divides each measured loop's Ir by its iteration count.
#
#   bench/hotpath/callgrind.sh                 # 100000 requests, 1000000 picks
#   REQUESTS=20000 PICKS=100000 bench/hotpath/callgrind.sh
#   KEEP=dir bench/hotpath/callgrind.sh        # keep the callgrind.out files in dir
#   ARGS="--hosts" bench/hotpath/callgrind.sh  # more hotpath options for the requests run
set -euo pipefail
cd "$(dirname "$0")/../.."

requests=${REQUESTS:-100000}
picks=${PICKS:-1000000}
if [ -n "${KEEP:-}" ]; then
  out=$KEEP
  mkdir -p "$out"
else
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi

cargo build --quiet --release -p alternator-lb-hotpath
bin=target/release/hotpath

# Ir collected while inside the toggled function (callgrind's "Collected").
collected() { sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$1"; }
# Inclusive Ir of one function, from a callgrind output file (0 if absent).
# awk reads to the end: leaving early would end callgrind_annotate with
# SIGPIPE, which pipefail turns into this script's failure.
inclusive() {
  callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
    awk -v f=":$2 [" '!found && index($0, f) { gsub(",", "", $1); print $1; found = 1 }
                     END { if (!found) print 0 }'
}
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }

echo "==> callgrind: $requests full requests (--toggle-collect=hotpath_requests_loop)"
valgrind --tool=callgrind --toggle-collect=hotpath_requests_loop \
  --callgrind-out-file="$out/requests.out" \
  "$bin" --requests "$requests" ${ARGS:-} >"$out/requests.txt" 2>"$out/requests.log"
echo "==> callgrind: $picks picks as Routes::pick makes them (--toggle-collect=hotpath_pick_loop)"
valgrind --tool=callgrind --toggle-collect=hotpath_pick_loop \
  --callgrind-out-file="$out/pick.out" \
  "$bin" --only-picking --requests "$picks" >"$out/pick.txt" 2>"$out/pick.log"
echo "==> callgrind: $picks bare RoundRobin::pick calls (--toggle-collect=hotpath_pick_raw_loop)"
valgrind --tool=callgrind --toggle-collect=hotpath_pick_raw_loop \
  --callgrind-out-file="$out/pick_raw.out" \
  "$bin" --only-picking --requests "$picks" >"$out/pick_raw.txt" 2>"$out/pick_raw.log"

total=$(collected "$out/requests.log")
f="$out/requests.out"
entry_sum=0
echo
echo "Instructions (Ir) per request, full sequence through the entry points: $(div "$total" "$requests")"
echo "  inclusive, per entry point (mock host calls included):"
for e in proxy_on_context_create proxy_on_request_headers proxy_on_request_body \
  proxy_on_response_headers proxy_on_response_body proxy_on_delete; do
  ir=$(inclusive "$f" "$e")
  entry_sum=$((entry_sum + ir))
  printf '    %-28s %8s\n' "$e" "$(div "$ir" "$requests")"
done
foreign=$(inclusive "$f" proxy_call_foreign_function)
property=$(inclusive "$f" proxy_get_property)
allocate=$(inclusive "$f" proxy_on_memory_allocate)
malloc=$(inclusive "$f" malloc)
free=$(inclusive "$f" free)
mocks=$((foreign + property - allocate))
driver=$((total - entry_sum))
printf '  %-56s %8s\n' \
  "driver loop (its calls to the 6 entry points):" "$(div "$driver" "$requests")" \
  "mock host functions' own work (see README):" "$(div "$mocks" "$requests")" \
  "module side (filter + entry points + allocator):" "$(div $((total - driver - mocks)) "$requests")" \
  "  of which glibc malloc + free:" "$(div $((malloc + free)) "$requests")"
echo
echo "Instructions per pick, as Routes::pick (RefCell borrow, pick, Rc clone + drop, loop):" \
  "$(div "$(collected "$out/pick.log")" "$picks")"
echo "Instructions per pick, RoundRobin::pick alone (with the loop around it):" \
  "$(div "$(collected "$out/pick_raw.log")" "$picks")"
if [ -n "${KEEP:-}" ]; then
  echo
  echo "(callgrind output files in $out)"
fi
