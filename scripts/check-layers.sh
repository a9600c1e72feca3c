#!/usr/bin/env bash
#
# scripts/check-layers.sh — checks the include rule of docs/architecture.md
# ("The house"):
#
#   1. src/common and include/common include no project header outside
#      include/common; src/worker and include/worker none from
#      include/coordinator; src/coordinator and include/coordinator none
#      from include/worker.  Only src/task_tracker.c includes from every
#      folder.
#   2. No cycle between files: a file depends on another when it (or its
#      header) includes the other's header (include/X/tt_Y.h belongs to
#      src/X/Y.c).
#   3. When the objects are built (make), no cycle either between the
#      files' symbols: a file depends on another when it uses a symbol the
#      other defines (catches an extern declared outside a header).
#
# Prints every breach and exits 1 when there is one, 0 otherwise.
#
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

bad=0
edges=$(mktemp)
trap 'rm -f "$edges"' EXIT

# the unit a source or header file belongs to: common/remote, worker/shmem, ...
unit() {
	local f=${1#src/}
	f=${f#include/}
	f=${f%.c}
	f=${f%.h}
	case $f in
		*/tt_*) f=${f%%/*}/${f#*/tt_} ;;
	esac
	echo "$f"
}

for f in $(find src include -name '*.c' -o -name '*.h' | sort); do
	u=$(unit "$f")
	case $f in
		src/task_tracker.c) allowed='common worker coordinator' ;;
		*/common/*) allowed='common' ;;
		*/worker/*) allowed='common worker' ;;
		*/coordinator/*) allowed='common coordinator' ;;
		*) echo "$f: not in a folder by role"; bad=1; continue ;;
	esac
	for inc in $(sed -n 's/^#include "\(\(common\|worker\|coordinator\)\/tt_[a-z_]*\.h\)"$/\1/p' "$f"); do
		folder=${inc%%/*}
		case " $allowed " in
			*" $folder "*) ;;
			*) echo "$f includes $inc: $(dirname "${f#*/}") may include only: $allowed"; bad=1 ;;
		esac
		v=$(unit "$inc")
		[ "$u" != "$v" ] && echo "$u $v" >>"$edges"
	done
	if grep -q '^#include "task_tracker.h"' "$f"; then
		echo "$f includes task_tracker.h, which is gone (include/common/tt_settings.h)"
		bad=1
	fi
done

if ! sort -u "$edges" | tsort >/dev/null 2>"$edges.err"; then
	echo "cycle between files through their includes:"
	sed -n 's/^tsort: //p' "$edges.err"
	bad=1
fi
rm -f "$edges.err"

objs=$(find src -name '*.o' | sort)
if [ -n "$objs" ]; then
	: >"$edges"
	declare -A def
	for o in $objs; do
		for s in $(nm -g --defined-only "$o" | awk '{print $3}'); do
			def[$s]=$(unit "$o")
		done
	done
	for o in $objs; do
		u=$(unit "$o")
		u=${u%.o}
		for s in $(nm -u "$o" | awk '{print $2}'); do
			v=${def[$s]:-}
			[ -n "$v" ] && [ "${v%.o}" != "$u" ] && echo "$u ${v%.o} $s" >>"$edges"
		done
	done
	if ! awk '{print $1, $2}' "$edges" | sort -u | tsort >/dev/null 2>"$edges.err"; then
		echo "cycle between files through their symbols:"
		sed -n 's/^tsort: //p' "$edges.err"
		bad=1
	fi
	rm -f "$edges.err"
fi

[ $bad -eq 0 ] && echo "layers ok"
exit $bad
