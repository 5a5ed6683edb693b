#!/bin/sh
# Entry point of the kube-proxy-rs image: makes `iptables` (and ip6tables,
# iptables-restore, iptables-save) use the same backend as the host, then runs
# kube-proxy-rs with the arguments given.
#
# The image has both iptables backends (nft and legacy). Rules written with the
# wrong one would sit beside the host's and be ignored or conflict, so pick the
# backend the host already uses:
#   1. kubelet marks its backend with a KUBE-IPTABLES-HINT (or, before 1.24,
#      KUBE-KUBELET-CANARY) chain in the mangle table: follow it;
#   2. otherwise take the backend holding more rules (nft on a tie, e.g. a
#      fresh node: Debian's and most distributions' default).
# Set KPR_IPTABLES_BACKEND=nft|legacy to skip the detection.
set -eu

has_hint() {
    "$1" -t mangle 2>/dev/null | grep -qE '^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) '
}

count_rules() {
    { "iptables-$1-save" 2>/dev/null; "ip6tables-$1-save" 2>/dev/null; } | grep -c '^-' || true
}

backend="${KPR_IPTABLES_BACKEND:-}"
if [ -z "$backend" ]; then
    if has_hint iptables-nft-save || has_hint ip6tables-nft-save; then
        backend=nft
    elif has_hint iptables-legacy-save || has_hint ip6tables-legacy-save; then
        backend=legacy
    elif [ "$(count_rules legacy)" -gt "$(count_rules nft)" ]; then
        backend=legacy
    else
        backend=nft
    fi
fi
case "$backend" in
    nft|legacy) ;;
    *) echo "KPR_IPTABLES_BACKEND must be nft or legacy, not '$backend'" >&2; exit 1 ;;
esac

update-alternatives --set iptables "/usr/sbin/iptables-$backend" >/dev/null
update-alternatives --set ip6tables "/usr/sbin/ip6tables-$backend" >/dev/null
echo "kube-proxy-rs image: using iptables-$backend (the host's backend)" >&2

exec /usr/local/bin/kube-proxy-rs "$@"
