#!/bin/sh
# Tape emulation, prepare side: xrootd's prepare plug-in (libXrdOfsPrepGPI) runs this script.
# Arguments: [plug-in options] -- <request id> <query|prep|stage|evict|cancel> [<path> ...]
# A file is "on tape" once the migrator has copied it from the disk buffer into the MSS directory.
# `query` answers the JSON gfal2 reads for archive_poll/bring_online_poll; xrootd 5.5 caps the answer
# at ~2 kB, so clients query a few files at a time.
BUFFER=@BUFFER@
MSS=@MSS@

while [ $# -gt 0 ] && [ "$1" != "--" ]; do shift; done
[ $# -gt 0 ] && shift
request_id=$1
request=$2
shift 2

json_string() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

exists() {
    if [ -e "$1" ]; then printf true; else printf false; fi
}

case "$request" in
query)
    printf '{"request_id":%s,"responses":[' "$(json_string "$request_id")"
    separator=
    for path in "$@"; do
        path=${path%%\?*}
        found=false
        if [ -e "$BUFFER$path" ] || [ -e "$MSS$path" ]; then found=true; fi
        printf '%s{"path":%s,"path_exists":%s,"on_tape":%s,"online":%s,"error_text":""}' \
            "$separator" "$(json_string "$path")" "$found" "$(exists "$MSS$path")" "$(exists "$BUFFER$path")"
        separator=,
    done
    printf ']}\n'
    ;;
prep | stage)
    # Bring online: recall a file that is on tape but no longer in the disk buffer.
    for path in "$@"; do
        path=${path%%\?*}
        if [ ! -e "$BUFFER$path" ] && [ -f "$MSS$path" ]; then
            mkdir -p "$(dirname "$BUFFER$path")" &&
                cp -p "$MSS$path" "$BUFFER$path.recall.$$" &&
                mv "$BUFFER$path.recall.$$" "$BUFFER$path"
        fi
    done
    ;;
evict)
    # Free buffer space, but only for files already safe on tape.
    for path in "$@"; do
        path=${path%%\?*}
        if [ -f "$MSS$path" ]; then rm -f "$BUFFER$path"; fi
    done
    ;;
esac
exit 0
