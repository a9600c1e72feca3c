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
#      libipc-run-perl, make, gcc, sudo, iproute2, procps: pgrep for
#      210_coordinator_faults.pl);
#   2. copies the source tree into a fresh temporary directory owned by the
#      unprivileged `postgres` OS user (PostgreSQL refuses to run as root, and
#      the checkout itself may not be readable by postgres);
#   3. builds there as postgres with warnings as errors, installs as root;
#   4. runs, as postgres, the three suites of the PGXS Makefile one after the
#      other: pg_regress (REGRESS), pg_isolation_regress (ISOLATION) and the
#      TAP tests (TAP_TESTS/PROVE_TESTS), each TAP file on its own so that its
#      logs can be shown when it fails;
#   5. prints regression.diffs and the TAP logs of what failed, removes the
#      temporary directory and ends with the line
#      "N passed, N failed, N skipped".
#
# Privileges of the TAP tests: for the length of the run, postgres may run
# one root-owned helper, /usr/local/libexec/task_tracker-test-priv (a copy of
# scripts/tt-test-priv), through `sudo -n`, and nothing else; the helper
# accepts only fixed verbs on fixed names (the network namespace of
# 222_partition.pl, the small tmpfs of 206_disk_full.pl) and refuses to work
# once this script is gone.  The sudoers rule, the helper, the namespace and
# the mounts are removed when this script exits, also on INT/TERM/HUP (the
# running suite is stopped first); after each TAP file the namespace and the
# mounts it left are removed.  TT_PRIV=0 grants nothing (015, 020, 206 and 222 are then
# skipped with the reason).
#
# Counting: every pg_regress test, every isolation spec and every TAP test
# file counts as one test.  A TAP file that skips itself (a skip_all plan:
# prove prints "skipped: <reason>") counts as skipped, never as passed, and
# its reason is printed.  A suite that cannot run at all (build failure,
# initdb failure, time-out) counts as one failed test.  The exit status is 0
# only when nothing failed.  TT_TESTS naming an unknown suite or nothing, and
# TT_TAP matching no file, are errors (exit status 2, before anything runs).
#
# Environment:
#   TT_TESTS   suites to run, any of "layers regress isolation tap" (default:
#              all; layers is scripts/check-layers.sh, one test)
#   TT_TAP     glob of TAP files relative to the repository (default test/t/*.pl)
#   TT_KEEP    1 = keep the temporary directory (its path is printed)
#   TT_SUITE_TIMEOUT  seconds one suite / one TAP file may take (default 240)
#   TT_BUDGET  seconds the whole run may take (default 1500); TAP files not
#              started within it are counted as failed ("not run")
#   TT_PRIV    0 = do not grant postgres the privileged test helper
#   TT_PG_CONFIG  pg_config of the PostgreSQL 15 installation to build and
#              test against (default /usr/lib/postgresql/15/bin/pg_config)
#
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TT_TESTS=${TT_TESTS:-layers regress isolation tap}
TT_TAP=${TT_TAP:-test/t/*.pl}
TT_KEEP=${TT_KEEP:-0}
TT_SUITE_TIMEOUT=${TT_SUITE_TIMEOUT:-240}
TT_BUDGET=${TT_BUDGET:-1500}
TT_PRIV=${TT_PRIV:-1}
WERROR="-Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare"

passed=0
failed=0
skipped=0
failed_names=()
skipped_names=()

say() { printf '\n=== %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
	echo "scripts/test.sh must run as root (sudo bash scripts/test.sh): it installs" >&2
	echo "packages and runs the test servers as the unprivileged postgres OS user." >&2
	exit 2
fi

# ---------------------------------------------------------------- selection
# TT_TESTS must name known suites, at least one; TT_TAP (when tap runs) must
# match at least one file: a selection that runs nothing is a mistake, not
# a pass
suites=0
for s in $TT_TESTS; do
	case "$s" in
	layers | regress | isolation | tap) suites=$((suites + 1)) ;;
	*)
		echo "TT_TESTS: unknown suite '$s' (known: layers regress isolation tap)" >&2
		exit 2
		;;
	esac
done
if [ "$suites" -eq 0 ]; then
	echo "TT_TESTS='$TT_TESTS' selects no suite (known: layers regress isolation tap)" >&2
	exit 2
fi
case " $TT_TESTS " in *" tap "*)
	# (the glob is expanded here, unquoted; only existing files count)
	# shellcheck disable=SC2207
	taps=($(cd "$REPO" && shopt -s nullglob &&
		for f in $TT_TAP; do [ -f "$f" ] && echo "$f"; done | sort))
	if [ ${#taps[@]} -eq 0 ]; then
		echo "TT_TAP='$TT_TAP' matches no TAP file (a glob relative to $REPO, e.g. 'test/t/00[1-3]*.pl')" >&2
		exit 2
	fi
	;;
esac

# ---------------------------------------------------------------- packages
need=()
for pkg in postgresql-15 postgresql-server-dev-15 libipc-run-perl make gcc sudo iproute2 procps; do
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

PG_CONFIG=${TT_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PGBIN=$("$PG_CONFIG" --bindir)
if ! id postgres >/dev/null 2>&1; then
	echo "the postgres OS user is missing (it comes with postgresql-15)" >&2
	exit 2
fi

# One run at a time on this machine: every run installs task_tracker.so into
# the one PostgreSQL library directory, so two concurrent runs would test
# each other's builds.  The lock is held until this script exits.
# (TT_PG_CONFIG names another, relocated copy of the installation: runs
# against different copies do not share a library directory or a lock)
lockname=task_tracker-install
[ "$PG_CONFIG" != /usr/lib/postgresql/15/bin/pg_config ] &&
	lockname="$lockname-$(printf '%s' "$PG_CONFIG" | md5sum | cut -c1-8)"
exec 9>"/tmp/$lockname.lock"
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

# ---------------------------------------------------------------- privileges
PRIV_BIN=/usr/local/libexec/task_tracker-test-priv
PRIV_SUDOERS=/etc/sudoers.d/task_tracker-test
PRIV_GATE=/run/task_tracker-test-priv.gate
PRIV_MADE_LIBEXEC=/run/task_tracker-test-priv.made-libexec

# priv_teardown: remove the network namespace and the tmpfs mounts (under
# $WORK) a test left behind; servers must be stopped first
priv_teardown() {
	env -i bash "$REPO/scripts/tt-test-priv" teardown "$WORK" >/dev/null 2>&1 || true
}

# priv_revoke: take the grant back (also what a killed earlier run left)
priv_revoke() {
	rm -f "$PRIV_SUDOERS" "$PRIV_SUDOERS.tmp" "$PRIV_BIN" "$PRIV_GATE"
	if [ -f "$PRIV_MADE_LIBEXEC" ]; then
		rmdir "$(dirname "$PRIV_BIN")" 2>/dev/null || true
		rm -f "$PRIV_MADE_LIBEXEC"
	fi
}

# The grant, the namespace and the mounts are machine-wide (one sudoers
# rule, one helper, one namespace), while runs against different
# installations (TT_PG_CONFIG) hold different install locks and run at the
# same time.  So a run that grants takes the machine-wide lock below first
# and holds it to its end, and only the run that granted ever tears down or
# revokes: a run with TT_PRIV=0, or one that did not get to grant, leaves
# another run's grant, namespace and mounts alone.
PRIV_LOCK=/tmp/task_tracker-test-priv.lock
granted=0

# priv_grant: install the helper and let postgres run it through sudo -n
priv_grant() {
	local start rule
	exec 8>"$PRIV_LOCK"
	if ! flock -n 8; then
		echo "waiting for another run that grants the privileged test helper to finish ..." >&2
		flock 8
	fi
	granted=1
	priv_revoke
	# what a killed earlier run may have left (runs are serialised by the lock)
	env -i bash "$REPO/scripts/tt-test-priv" teardown / >/dev/null 2>&1 || true
	# the gate: this process, by pid and start time (see tt-test-priv)
	start=$(sed -E 's/^.*\) //' "/proc/$$/stat" | awk '{ print $20 }')
	echo "$$ $start" >"$PRIV_GATE" && chmod 0644 "$PRIV_GATE" || return 1
	if [ ! -d "$(dirname "$PRIV_BIN")" ]; then
		mkdir -p "$(dirname "$PRIV_BIN")" && : >"$PRIV_MADE_LIBEXEC" || return 1
	fi
	sed "s|^PG_CTL=.*|PG_CTL=$PGBIN/pg_ctl|" "$REPO/scripts/tt-test-priv" >"$PRIV_BIN.tmp" &&
		chown root:root "$PRIV_BIN.tmp" && chmod 0755 "$PRIV_BIN.tmp" &&
		mv -f "$PRIV_BIN.tmp" "$PRIV_BIN" || return 1
	rule="postgres ALL=(root) NOPASSWD: $PRIV_BIN"
	# (sudo skips files of sudoers.d whose name has a dot: the .tmp is inert)
	echo "$rule" >"$PRIV_SUDOERS.tmp" && chmod 0440 "$PRIV_SUDOERS.tmp" &&
		visudo -cqf "$PRIV_SUDOERS.tmp" && mv -f "$PRIV_SUDOERS.tmp" "$PRIV_SUDOERS" || return 1
	[ "$(runuser -u postgres -- sudo -n "$PRIV_BIN" check 2>&1)" = ok ]
}

# the suite running in the background (see run_logged)
child=

cleanup() {
	stop_leftover_servers
	if [ "$granted" = 1 ]; then
		priv_teardown
		priv_revoke
	fi
	if [ "$TT_KEEP" = 1 ]; then
		echo "kept $WORK"
	else
		rm -rf --one-file-system "$WORK"
	fi
}

# on INT/TERM/HUP stop the running suite at once (runuser passes the TERM to
# its command, timeout to its whole process group), then exit: the EXIT trap
# cleans up
on_signal() {
	trap '' INT TERM HUP
	if [ -n "$child" ]; then
		kill -TERM "$child" 2>/dev/null
		wait "$child" 2>/dev/null
	fi
	exit 130
}
trap cleanup EXIT
trap on_signal INT TERM HUP

tar -C "$REPO" \
	--exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=./tmp_check --exclude=./tmp_check_iso --exclude=./results \
	--exclude=./output_iso --exclude=./log --exclude=./regression.diffs \
	--exclude=./regression.out \
	-cf - . | tar -C "$WORK" -xf - || exit 2
mkdir -p "$LOGS"
chown -R postgres: "$WORK"
chmod 0755 "$WORK"

# AS_PG CMD...: run CMD as postgres in the copy with a clean environment
AS_PG=(runuser -u postgres -- env -i \
	HOME=/var/lib/postgresql USER=postgres LOGNAME=postgres \
	PATH="$PGBIN:/usr/local/bin:/usr/bin:/bin" \
	LANG=C.UTF-8 LC_ALL=C.UTF-8 PGTZ=UTC \
	PG_TEST_TIMEOUT_DEFAULT="${PG_TEST_TIMEOUT_DEFAULT:-60}" \
	PG_TEST_NOCLEAN="${PG_TEST_NOCLEAN:-}" \
	TT_FUZZ_SEED="${TT_FUZZ_SEED:-}" TT_FUZZ_CALLS="${TT_FUZZ_CALLS:-}" \
	TT_FUZZ_SECONDS="${TT_FUZZ_SECONDS:-}" TT_SOAK_SECONDS="${TT_SOAK_SECONDS:-}" \
	TT_PRIV="$TT_PRIV" \
	bash -c 'cd "$0" && exec "$@"' "$WORK")
as_pg() { "${AS_PG[@]}" "$@"; }

# run_logged OUT CMD...: run CMD as postgres (AS_PG) in the background, its
# output into OUT, and wait for it, so that a signal to this script is
# handled at once (on_signal) instead of after CMD; then print OUT.
# Returns CMD's exit status.
run_logged() {
	local out=$1 rc
	shift
	"${AS_PG[@]}" "$@" </dev/null >"$out" 2>&1 &
	child=$!
	wait "$child"
	rc=$?
	child=
	cat "$out"
	return "$rc"
}

MAKEVARS=(PG_CONFIG="$PG_CONFIG" with_llvm=no)

# ---------------------------------------------------------------- build
say "building in $WORK"
if ! as_pg make -s "${MAKEVARS[@]}" COPT="$WERROR" >"$LOGS/build.log" 2>&1; then
	cat "$LOGS/build.log"
	echo "build failed"
	echo "0 passed, 1 failed, 0 skipped"
	exit 1
fi
cat "$LOGS/build.log"
if ! (cd "$WORK" && make -s "${MAKEVARS[@]}" install) >"$LOGS/install.log" 2>&1; then
	cat "$LOGS/install.log"
	echo "make install failed"
	echo "0 passed, 1 failed, 0 skipped"
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

# run_regress_suite NAME OUTDIR MAKEVAR...: one pg_regress-style suite of the
# PGXS Makefile over the tests with_expected found runnable; OUTDIR is where
# it writes regression.diffs and log/ ("" for the top directory, else with a
# trailing slash), MAKEVAR... select the suite.  Sets rc.
run_regress_suite() {
	local sname=$1 outdir=$2
	shift 2
	if [ ${#runnable[@]} -gt 0 ]; then
		run_logged "$LOGS/$sname.out" timeout "$TT_SUITE_TIMEOUT" make "${MAKEVARS[@]}" \
			installcheck "$@"
		rc=$?
	else
		: >"$LOGS/$sname.out"; rc=0
	fi
	count_pg_regress "$LOGS/$sname.out" "$sname"
	if [ "$rc" -ne 0 ] && [ -f "$WORK/${outdir}regression.diffs" ]; then
		say "${outdir}regression.diffs"
		cat "$WORK/${outdir}regression.diffs"
	fi
	if [ "$rc" -ne 0 ] && ! grep -qE '\.\.\. +FAILED' "$LOGS/$sname.out"; then
		# the suite did not get to run its tests (initdb, start, time-out)
		failed=$((failed + 1)); failed_names+=("$sname (suite did not run, rc=$rc)")
		[ -f "$WORK/${outdir}log/postmaster.log" ] && tail -n 50 "$WORK/${outdir}log/postmaster.log"
	fi
	stop_leftover_servers
}

# ---------------------------------------------------------------- layers
# the include rule and the absence of cycles between files
# (docs/architecture.md, "The house"), on the objects just built
case " $TT_TESTS " in *" layers "*)
	say "layers (scripts/check-layers.sh)"
	if (cd "$WORK" && bash scripts/check-layers.sh) >"$LOGS/layers.out" 2>&1; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1)); failed_names+=("layers")
	fi
	cat "$LOGS/layers.out"
	;;
esac

# ---------------------------------------------------------------- regress
case " $TT_TESTS " in *" regress "*)
	say "pg_regress"
	with_expected test/sql sql expected test/expected
	run_regress_suite regress "" ISOLATION= TAP_TESTS= REGRESS="${runnable[*]}"
	[ "$n" -eq 0 ] && [ "$rc" -eq 0 ] && echo "(no pg_regress tests)"
	;;
esac

# ---------------------------------------------------------------- isolation
case " $TT_TESTS " in *" isolation "*)
	say "pg_isolation_regress"
	with_expected test/specs spec test/expected output_iso/expected
	run_regress_suite isolation output_iso/ REGRESS= TAP_TESTS= ISOLATION="${runnable[*]}"
	;;
esac

# ---------------------------------------------------------------- TAP
case " $TT_TESTS " in *" tap "*)
	say "TAP (prove)"
	if [ "$TT_PRIV" = 1 ]; then
		if priv_grant; then
			echo "postgres may run $PRIV_BIN through sudo -n until this run ends"
		else
			echo "could not grant postgres the privileged test helper: 015, 020, 206 and 222 will be skipped"
			priv_revoke
		fi
	fi
	for t in "${taps[@]}"; do
		if [ "$SECONDS" -ge "$TT_BUDGET" ]; then
			echo "$t: not run, the time budget of ${TT_BUDGET}s is spent"
			failed=$((failed + 1))
			failed_names+=("tap/$t (not run: time budget)")
			continue
		fi
		left=$((TT_BUDGET - SECONDS))
		[ "$left" -gt "$TT_SUITE_TIMEOUT" ] && left=$TT_SUITE_TIMEOUT
		run_logged "$LOGS/tap.out" timeout "$left" make -s "${MAKEVARS[@]}" installcheck \
			REGRESS= ISOLATION= PROVE_TESTS="$t"
		rc=$?
		# prove: "test/t/206_disk_full.pl .. skipped: <reason>", then
		# "Result: NOTESTS" (a skip_all plan, see tt_skip_test)
		why=$(grep -E '^[^ ]+\.pl \.+ skipped: ' "$LOGS/tap.out" | sed -E 's/^[^ ]+ \.+ skipped: //' | head -n 1)
		if [ "$rc" -eq 0 ] && [ -n "$why" ] && grep -q '^Result: NOTESTS' "$LOGS/tap.out"; then
			skipped=$((skipped + 1))
			skipped_names+=("tap/$t: $why")
			echo "$t: SKIPPED: $why"
		elif [ "$rc" -eq 0 ] && grep -q '^Result: PASS' "$LOGS/tap.out"; then
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
		[ "$granted" = 1 ] && priv_teardown
	done
	;;
esac

say "summary"
for n in "${skipped_names[@]}"; do
	echo "SKIPPED: $n"
done
for n in "${failed_names[@]}"; do
	echo "FAILED: $n"
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
