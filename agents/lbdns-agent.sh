#!/bin/sh
# lbdns-agent.sh: a minimal lbdns agent for hosts without Python (POSIX sh, awk, curl, Linux /proc).
#
# It reports established connections to LBDNS_PORTS, CPU use over the last interval, the load
# average and memory to every server in LBDNS_SERVERS, every LBDNS_INTERVAL seconds, and marks
# the host unhealthy after LBDNS_FAIL_AFTER failed checks of LBDNS_HEALTH_URL (HTTP 2xx) or
# LBDNS_HEALTH_CMD (exit status 0). Servers are pushed to concurrently, each with a timeout, so
# one that is away does not hold up the others. No registration, drain, custom metrics or advice:
# use `lbdns agent` for those.
#
# Settings (environment, or a file named by LBDNS_AGENT_ENV, e.g. /etc/lbdns/agent.env):
#   LBDNS_FARM       farm name, e.g. chat.example.test.                         (required)
#   LBDNS_SERVERS    space-separated server URLs, e.g. "http://ns1:8053 http://ns2:8053" (required)
#   LBDNS_HOST       host name in the farm                    (default: hostname -s)
#   LBDNS_PORTS      space-separated local listen ports       (default: none, no connections metric)
#   LBDNS_TOKEN      report token                             (default: none, loopback servers only)
#   LBDNS_INTERVAL   whole seconds between reports            (default: 1)
#   LBDNS_TIMEOUT    seconds per request, at most the interval (default: the interval)
#   LBDNS_HEALTH_URL / LBDNS_HEALTH_CMD, LBDNS_FAIL_AFTER (default 3), LBDNS_RECOVER_AFTER (default 2)
#   LBDNS_ONCE=1     print one report and exit
set -u

[ -n "${LBDNS_AGENT_ENV:-}" ] && . "$LBDNS_AGENT_ENV"

FARM=${LBDNS_FARM:?set LBDNS_FARM to the farm name}
SERVERS=${LBDNS_SERVERS:-}
HOST=${LBDNS_HOST:-$(hostname -s 2>/dev/null || hostname)}
PORTS=${LBDNS_PORTS:-}
INTERVAL=${LBDNS_INTERVAL:-1}
TIMEOUT=${LBDNS_TIMEOUT:-$INTERVAL}
FAIL_AFTER=${LBDNS_FAIL_AFTER:-3}
RECOVER_AFTER=${LBDNS_RECOVER_AFTER:-2}
[ -n "$SERVERS" ] || [ "${LBDNS_ONCE:-}" = 1 ] || { echo "set LBDNS_SERVERS" >&2; exit 2; }

# Established (state 01) TCP sockets whose local port is one of PORTS, IPv4 and IPv6.
connections() {
    awk -v ports="$PORTS" '
        BEGIN { n = split(ports, p, " "); for (i = 1; i <= n; i++) want[sprintf("%04X", p[i])] = 1 }
        FNR > 1 && $4 == "01" { split($2, local_, ":"); if (local_[2] in want) count++ }
        END { print count + 0 }
    ' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

cpu_ticks() { awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6; exit }' /proc/stat; }

memory() {
    awk '/^MemTotal:/ { t = $2 } /^MemAvailable:/ { a = $2 }
         END { if (t > 0) printf "%.4f", 1 - a / t; else print 0 }' /proc/meminfo
}

seq_now() {
    s=$(date +%s%3N 2>/dev/null)
    case "$s" in *N|'') s=$(( $(date +%s) * 1000 )) ;; esac
    [ "$s" -le "${SEQ:-0}" ] && s=$(( SEQ + 1 ))
    SEQ=$s
}

healthy=true fails=0 oks=0 first=1
check() {
    ok=1
    if [ -n "${LBDNS_HEALTH_URL:-}" ]; then
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time "$TIMEOUT" "$LBDNS_HEALTH_URL")
        case "$code" in 2??) ;; *) ok=0 ;; esac
    fi
    if [ -n "${LBDNS_HEALTH_CMD:-}" ]; then
        sh -c "$LBDNS_HEALTH_CMD" >/dev/null 2>&1 || ok=0
    fi
    if [ "$ok" = 1 ]; then oks=$((oks + 1)); fails=0; else fails=$((fails + 1)); oks=0; fi
    if [ "$first" = 1 ]; then
        first=0; [ "$ok" = 1 ] && healthy=true || healthy=false
    elif [ "$healthy" = true ] && [ "$fails" -ge "$FAIL_AFTER" ]; then
        healthy=false; echo "health check failing $fails times in a row: reporting unhealthy" >&2
    elif [ "$healthy" = false ] && [ "$oks" -ge "$RECOVER_AFTER" ]; then
        healthy=true; echo "health check passes again" >&2
    fi
}

set -- $(cpu_ticks); busy0=$1 idle0=$2
[ "${LBDNS_ONCE:-}" = 1 ] && sleep 1
# One marker file per failing server: a failure is logged when it starts and when it ends, not
# once per interval.
STATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/lbdns-agent.XXXXXX") || exit 1
trap 'rm -rf "$STATE_DIR"; exit 0' TERM INT
trap 'rm -rf "$STATE_DIR"' EXIT

while :; do
    set -- $(cpu_ticks); busy=$1 idle=$2
    cpu=$(awk -v b=$((busy - busy0)) -v i=$((idle - idle0)) \
        'BEGIN { if (b + i > 0) printf "%.4f", b / (b + i); else print 0 }')
    busy0=$busy idle0=$idle
    check
    seq_now
    metrics="\"cpu\":$cpu,\"load1\":$(cut -d' ' -f1 /proc/loadavg),\"memory\":$(memory)"
    [ -n "$PORTS" ] && metrics="\"connections\":$(connections),$metrics"
    report="{\"farm\":\"$FARM\",\"host\":\"$HOST\",\"seq\":$SEQ,\"interval\":$INTERVAL,\"healthy\":$healthy,\"metrics\":{$metrics}}"
    if [ "${LBDNS_ONCE:-}" = 1 ]; then echo "$report"; exit 0; fi
    # The sleep starts first and the pushes run beside it: with LBDNS_TIMEOUT at most the
    # interval, a server that is away never stretches the interval.
    sleep "$INTERVAL" &
    n=0
    for server in $SERVERS; do
        n=$((n + 1))
        (
            out=$(curl -sS --max-time "$TIMEOUT" -X POST -H 'Content-Type: application/json' \
                ${LBDNS_TOKEN:+-H "Authorization: Bearer $LBDNS_TOKEN"} \
                -w ' %{http_code}' --data "$report" "$server/v1/report" 2>&1)
            marker="$STATE_DIR/failing.$n"
            case "$out" in
                *' 200') [ -e "$marker" ] && rm -f "$marker" && echo "reports to $server go through again" >&2 ;;
                *) [ -e "$marker" ] || { : > "$marker"; echo "report to $server failed: $out" >&2; } ;;
            esac
        ) &
    done
    wait   # the sleep and the pushes; a TERM ends it at once
done
