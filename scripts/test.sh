#!/usr/bin/env bash
#
# scripts/test.sh — the test command of task_tracker (README: "Testing").
#
#   sudo bash scripts/test.sh            # everything
#   TT_TESTS=regress bash scripts/test.sh
#   TT_TESTS="regress isolation" bash scripts/test.sh
#   TT_TESTS=tap TT_TAP='test/t/003_*.pl' bash scripts/test.sh
#
# Runs as root on Debian bookworm:
#   1. installs what is missing (postgresql-15, postgresql-server-dev-15,
#      libipc-run-perl, make, gcc);
#   2. copies the source tree into a fresh temporary directory owned by the
#      unprivileged `postgres` OS user (PostgreSQL refuses to run as root, and
#      the checkout itself may not be readable by postgres);
#   3. builds there as postgres with warnings as errors, installs as root;
#   4. runs, as postgres, the three suites of the PGXS Makefile one after the
#      other: pg_regress (REGRESS), pg_isolation_regress (ISOLATION) and the
#      TAP tests (TAP_TESTS/PROVE_TESTS), each TAP file on its own so that its
#      logs can be shown when it fails;
#   5. prints regression.diffs and the TAP logs of what failed, removes the
#      temporary directory and ends with the line "N passed, N failed".
#
# Counting: every pg_regress test, every isolation spec and every TAP test
# file counts as one test.  A suite that cannot run at all (build failure,
# initdb failure, time-out) counts as one failed test.  The exit status is 0
# only when nothing failed.
#
# Environment:
#   TT_TESTS   suites to run, any of "regress isolation tap" (default: all)
#   TT_TAP     glob of TAP files relative to the repository (default test/t/*.pl)
#   TT_KEEP    1 = keep the temporary directory (its path is printed)
#   TT_SUITE_TIMEOUT  seconds one suite / one TAP file may take (default 240)
#   TT_BUDGET  seconds the whole run may take (default 780); TAP files not
#              started within it are counted as failed ("not run")
#
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TT_TESTS=${TT_TESTS:-regress isolation tap}
TT_TAP=${TT_TAP:-test/t/*.pl}
TT_KEEP=${TT_KEEP:-0}
TT_SUITE_TIMEOUT=${TT_SUITE_TIMEOUT:-240}
TT_BUDGET=${TT_BUDGET:-780}
WERROR="-Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare"

passed=0
failed=0
failed_names=()

say() { printf '\n=== %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
	echo "scripts/test.sh must run as root (sudo bash scripts/test.sh): it installs" >&2
	echo "packages and runs the test servers as the unprivileged postgres OS user." >&2
	exit 2
fi

# ---------------------------------------------------------------- packages
need=()
for pkg in postgresql-15 postgresql-server-dev-15 libipc-run-perl make gcc; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
		need+=("$pkg")
	fi
done
if [ ${#need[@]} -gt 0 ]; then
	say "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q || exit 2
	apt-get install -y -q --no-install-recommends "${need[@]}" || exit 2
fi

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PGBIN=$("$PG_CONFIG" --bindir)
if ! id postgres >/dev/null 2>&1; then
	echo "the postgres OS user is missing (it comes with postgresql-15)" >&2
	exit 2
fi

# One run at a time on this machine: every run installs task_tracker.so into
# the one PostgreSQL library directory, so two concurrent runs would test
# each other's builds.  The lock is held until this script exits.
exec 9>/tmp/task_tracker-install.lock
if ! flock -n 9; then
	echo "waiting for another test or bench run of task_tracker on this machine to finish ..." >&2
	flock 9
fi

# ---------------------------------------------------------------- private copy
WORK=$(mktemp -d /tmp/tt-test.XXXXXX)
LOGS="$WORK/.failed-logs"

stop_leftover_servers() {
	# Stop any server a killed or timed-out suite left running in our copy.
	# Only postmasters whose data directory lies under $WORK are touched.
	local pidfile
	while IFS= read -r pidfile; do
		[ -n "$pidfile" ] || continue
		runuser -u postgres -- "$PGBIN/pg_ctl" -D "$(dirname "$pidfile")" \
			stop -m immediate -w >/dev/null 2>&1 || true
	done < <(find "$WORK" -name postmaster.pid 2>/dev/null)
}

cleanup() {
	stop_leftover_servers
	if [ "$TT_KEEP" = 1 ]; then
		echo "kept $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tar -C "$REPO" \
	--exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=./tmp_check --exclude=./tmp_check_iso --exclude=./results \
	--exclude=./output_iso --exclude=./log --exclude=./regression.diffs \
	--exclude=./regression.out \
	-cf - . | tar -C "$WORK" -xf - || exit 2
mkdir -p "$LOGS"
chown -R postgres: "$WORK"
chmod 0755 "$WORK"

# as_pg CMD...: run CMD as postgres in the copy with a clean environment
as_pg() {
	runuser -u postgres -- env -i \
		HOME=/var/lib/postgresql USER=postgres LOGNAME=postgres \
		PATH="$PGBIN:/usr/local/bin:/usr/bin:/bin" \
		LANG=C.UTF-8 LC_ALL=C.UTF-8 PGTZ=UTC \
		PG_TEST_TIMEOUT_DEFAULT="${PG_TEST_TIMEOUT_DEFAULT:-60}" \
		PG_TEST_NOCLEAN="${PG_TEST_NOCLEAN:-}" \
		TT_FUZZ_SEED="${TT_FUZZ_SEED:-}" TT_FUZZ_CALLS="${TT_FUZZ_CALLS:-}" \
		TT_FUZZ_SECONDS="${TT_FUZZ_SECONDS:-}" TT_SOAK_SECONDS="${TT_SOAK_SECONDS:-}" \
		bash -c 'cd "$0" && exec "$@"' "$WORK" "$@"
}

MAKEVARS=(PG_CONFIG="$PG_CONFIG" with_llvm=no)

# ---------------------------------------------------------------- build
say "building in $WORK"
if ! as_pg make -s "${MAKEVARS[@]}" COPT="$WERROR" >"$LOGS/build.log" 2>&1; then
	cat "$LOGS/build.log"
	echo "build failed"
	echo "0 passed, 1 failed"
	exit 1
fi
cat "$LOGS/build.log"
if ! (cd "$WORK" && make -s "${MAKEVARS[@]}" install) >"$LOGS/install.log" 2>&1; then
	cat "$LOGS/install.log"
	echo "make install failed"
	echo "0 passed, 1 failed"
	exit 1
fi

# count_pg_regress FILE SUITE: add the ok / FAILED lines of a pg_regress run
# to the totals; sets n to the number of tests seen
count_pg_regress() {
	local out=$1 suite=$2 ok bad
	ok=$(grep -cE '\.\.\. +ok( |$)' "$out")
	bad=$(grep -cE '\.\.\. +FAILED' "$out")
	passed=$((passed + ok))
	failed=$((failed + bad))
	if [ "$bad" -gt 0 ]; then
		while IFS= read -r name; do
			failed_names+=("$suite/$name")
		done < <(grep -E '\.\.\. +FAILED' "$out" | sed -E 's/^(test| ) *([^ ]+) .*/\2/')
	fi
	n=$((ok + bad))
}

# with_expected DIR EXT EXPDIR...: sets runnable to the tests of DIR/*.EXT
# that have an expected output (NAME.out or a NAME_N.out variant) in one of
# the EXPDIRs; a test without one counts as failed (pg_regress would abort
# the whole suite on it).
with_expected() {
	local dir=$1 ext=$2 f name e found
	shift 2
	runnable=()
	for f in "$WORK/$dir"/*."$ext"; do
		[ -f "$f" ] || continue
		name=$(basename "$f" ".$ext")
		found=0
		for e in "$@"; do
			if compgen -G "$WORK/$e/$name.out" >/dev/null ||
				compgen -G "$WORK/$e/${name}_[0-9].out" >/dev/null; then
				found=1
			fi
		done
		if [ "$found" = 1 ]; then
			runnable+=("$name")
		else
			echo "$dir/$name.$ext has no expected output (looked in: $*)"
			failed=$((failed + 1))
			failed_names+=("$dir/$name.$ext (no expected output)")
		fi
	done
}

# ---------------------------------------------------------------- regress
case " $TT_TESTS " in *" regress "*)
	say "pg_regress"
	with_expected test/sql sql expected test/expected
	if [ ${#runnable[@]} -gt 0 ]; then
		as_pg timeout "$TT_SUITE_TIMEOUT" make "${MAKEVARS[@]}" installcheck \
			ISOLATION= TAP_TESTS= REGRESS="${runnable[*]}" 2>&1 | tee "$LOGS/regress.out"
		rc=${PIPESTATUS[0]}
	else
		: >"$LOGS/regress.out"; rc=0
	fi
	count_pg_regress "$LOGS/regress.out" regress
	if [ "$rc" -ne 0 ] && [ -f "$WORK/regression.diffs" ]; then
		say "regression.diffs"
		cat "$WORK/regression.diffs"
	fi
	if [ "$rc" -ne 0 ] && ! grep -qE '\.\.\. +FAILED' "$LOGS/regress.out"; then
		# the suite did not get to run its tests (initdb, start, time-out)
		failed=$((failed + 1)); failed_names+=("regress (suite did not run, rc=$rc)")
		[ -f "$WORK/log/postmaster.log" ] && tail -n 50 "$WORK/log/postmaster.log"
	fi
	[ "$n" -eq 0 ] && [ "$rc" -eq 0 ] && echo "(no pg_regress tests)"
	stop_leftover_servers
	;;
esac

# ---------------------------------------------------------------- isolation
case " $TT_TESTS " in *" isolation "*)
	say "pg_isolation_regress"
	with_expected test/specs spec test/expected output_iso/expected
	if [ ${#runnable[@]} -gt 0 ]; then
		as_pg timeout "$TT_SUITE_TIMEOUT" make "${MAKEVARS[@]}" installcheck \
			REGRESS= TAP_TESTS= ISOLATION="${runnable[*]}" 2>&1 | tee "$LOGS/isolation.out"
		rc=${PIPESTATUS[0]}
	else
		: >"$LOGS/isolation.out"; rc=0
	fi
	count_pg_regress "$LOGS/isolation.out" isolation
	if [ "$rc" -ne 0 ] && [ -f "$WORK/output_iso/regression.diffs" ]; then
		say "output_iso/regression.diffs"
		cat "$WORK/output_iso/regression.diffs"
	fi
	if [ "$rc" -ne 0 ] && ! grep -qE '\.\.\. +FAILED' "$LOGS/isolation.out"; then
		failed=$((failed + 1)); failed_names+=("isolation (suite did not run, rc=$rc)")
		[ -f "$WORK/output_iso/log/postmaster.log" ] && tail -n 50 "$WORK/output_iso/log/postmaster.log"
	fi
	stop_leftover_servers
	;;
esac

# ---------------------------------------------------------------- TAP
case " $TT_TESTS " in *" tap "*)
	say "TAP (prove)"
	shopt -s nullglob
	# shellcheck disable=SC2206
	taps=($(cd "$WORK" && eval "ls -1 $TT_TAP" 2>/dev/null | sort))
	shopt -u nullglob
	for t in "${taps[@]}"; do
		if [ "$SECONDS" -ge "$TT_BUDGET" ]; then
			echo "$t: not run, the time budget of ${TT_BUDGET}s is spent"
			failed=$((failed + 1))
			failed_names+=("tap/$t (not run: time budget)")
			continue
		fi
		left=$((TT_BUDGET - SECONDS))
		[ "$left" -gt "$TT_SUITE_TIMEOUT" ] && left=$TT_SUITE_TIMEOUT
		as_pg timeout "$left" make -s "${MAKEVARS[@]}" installcheck \
			REGRESS= ISOLATION= PROVE_TESTS="$t" 2>&1 | tee "$LOGS/tap.out"
		rc=${PIPESTATUS[0]}
		if [ "$rc" -eq 0 ] && grep -q '^Result: PASS' "$LOGS/tap.out"; then
			passed=$((passed + 1))
		else
			failed=$((failed + 1))
			failed_names+=("tap/$t")
			[ "$rc" -eq 124 ] && echo "$t: timed out after ${left}s"
			for f in "$WORK"/tmp_check/log/*; do
				[ -f "$f" ] || continue
				say "$t: $(basename "$f")"
				# regress_log_* holds the story (failed assertions first);
				# both it and the server logs can be long
				if [[ $(basename "$f") == regress_log_* ]]; then
					grep -E -A6 'not ok|Failed test|timed out|died|BAIL' "$f" | head -n 150
					echo "--- last lines of $(basename "$f"):"
				fi
				tail -n 300 "$f"
			done
		fi
		stop_leftover_servers
	done
	[ ${#taps[@]} -eq 0 ] && echo "(no TAP tests match $TT_TAP)"
	;;
esac

say "summary"
for n in "${failed_names[@]}"; do
	echo "FAILED: $n"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
