#!/usr/bin/env bash
# A small certificate authority for Cloud Rack's controller channel (mutual TLS).
#
#   scripts/pki.sh DIR [--controller-name NAME] [--switch DPID_HEX]...
#
# Writes into DIR (created if missing; an existing CA there is reused, so hosts can be added
# later):
#   ca.pem, ca.key                      the CA (keep ca.key off the hosts)
#   controller.pem, controller.key      the controller's certificate, SAN DNS:NAME
#                                       (default controller.cloudrack: what switches check)
#   switch-DPID.pem, switch-DPID.key    one per --switch, SAN DNS:DPID.dpid.cloudrack, where
#                                       DPID is the datapath id as 16 lowercase hex digits:
#                                       the controller accepts that dpid only with that cert
#
# Keys are ECDSA P-256 in PKCS#8. Certificates are valid for 825 days.
# Then: cloudrack-controller --tls-cert DIR/controller.pem --tls-key DIR/controller.key --tls-ca DIR/ca.pem
#       cloudrack-switch --controller tls:IP:6653 --dpid DPID --tls-cert DIR/switch-DPID.pem \
#           --tls-key DIR/switch-DPID.key --tls-ca DIR/ca.pem
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
[ $# -ge 1 ] || usage 1
case "$1" in -h|--help) usage 0 ;; esac
DIR=$1
shift
NAME=controller.cloudrack
SWITCHES=()
while [ $# -gt 0 ]; do
    case "$1" in
        --controller-name) NAME=$2; shift 2 ;;
        --switch) SWITCHES+=("$2"); shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "pki.sh: unknown argument $1" >&2; usage 1 ;;
    esac
done
command -v openssl >/dev/null || { echo "pki.sh: openssl is needed (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$DIR"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ ! -s "$DIR/ca.pem" ]; then
    key "$DIR/ca.key"
    openssl req -x509 -new -key "$DIR/ca.key" -days 825 -subj "/O=Cloud Rack/CN=Cloud Rack CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$DIR/ca.pem" 2>/dev/null
fi

# leaf NAME_ON_DISK CN SAN
leaf() {
    local base=$DIR/$1
    key "$base.key"
    openssl req -new -key "$base.key" -subj "/O=Cloud Rack/CN=$2" -out "$base.csr" 2>/dev/null
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=$3" >"$base.ext"
    openssl x509 -req -in "$base.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
        -days 825 -extfile "$base.ext" -out "$base.pem" 2>/dev/null
    rm -f "$base.csr" "$base.ext"
}

[ -s "$DIR/controller.pem" ] || leaf controller "$NAME" "DNS:$NAME"
for d in "${SWITCHES[@]}"; do
    d=$(printf '%016x' "$((16#${d#0x}))")
    [ -s "$DIR/switch-$d.pem" ] || leaf "switch-$d" "dpid $d" "DNS:$d.dpid.cloudrack"
done
chmod 644 "$DIR"/*.pem
echo "pki: certificates in $DIR (CA, controller '$NAME', ${#SWITCHES[@]} switches)"
