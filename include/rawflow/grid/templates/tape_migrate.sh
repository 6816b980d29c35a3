#!/bin/sh
# Tape emulation, migration side: copy every file of the disk buffer that is not yet "on tape"
# (missing from the MSS directory, or rewritten since) into the MSS directory.
# Usage: tape_migrate.sh [--settle SECONDS] [--loop SECONDS]
#   --settle  skip files modified in the last SECONDS (they may still be being written)
#   --loop    run forever, one pass every SECONDS (the local grid's background migrator)
BUFFER=@BUFFER@
MSS=@MSS@
settle=0
loop=

while [ $# -gt 0 ]; do
    case "$1" in
    --settle) settle=$2; shift 2 ;;
    --loop) loop=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

migrate_once() {
    cd "$BUFFER" || exit 1
    find . -type f ! -name '*.recall.*' ! -name '*.migrate.*' ! -newermt "-$settle seconds" -print |
        while IFS= read -r file; do
            path=${file#.}
            target=$MSS$path
            if [ -e "$target" ] && [ ! "$BUFFER$path" -nt "$target" ]; then continue; fi
            mkdir -p "$(dirname "$target")" || exit 1
            # Copy under a temporary name and rename, so a file is on tape whole or not at all.
            cp -p "$BUFFER$path" "$target.migrate.$$" && mv "$target.migrate.$$" "$target" && echo "migrated $path"
        done
}

if [ -z "$loop" ]; then
    migrate_once
    exit $?
fi
while :; do
    migrate_once
    sleep "$loop"
done
