#!/usr/bin/env bash
# Make development/test certificates for Ferry with the openssl CLI.
#
#   scripts/gen-certs.sh [DIR]      (default: certs/ at the repository root)
#
# Does nothing (silently) if every file exists and server.pem is valid for at
# least another 30 days. Otherwise regenerates the whole set in a temporary
# directory and moves it into place. NOT for production use.
#
#   scripts/gen-certs.sh --pki DIR URL
#
# Test PKI for OCSP stapling and CRLs, always made afresh in DIR (which must
# exist): ca.pem/ca.key; server.pem (leaf + CA) and revoked.pem (revoked),
# localhost, whose authorityInfoAccess names the OCSP responder URL;
# client.pem and client-revoked.pem (revoked) for client certificates;
# index.txt (the CA database `openssl ocsp -index` answers from) and
# crl.pem (valid for 10 years).
set -euo pipefail

script_dir=$(cd "$(dirname "$0")" && pwd)
pki_url=
if [ "${1:-}" = --pki ]; then
    out=$2
    pki_url=$3
else
    out=${1:-"$(dirname "$script_dir")/certs"}
fi
days=825

files=(ca.pem ca.key server.pem server.key client.pem client.key
       other.pem other.key rogue-ca.pem rogue-client.pem rogue-client.key)

# The test PKI: no freshness check, no lock (a directory per test).
pki() {
    newca ca "Ferry Test PKI CA"
    local aia="authorityInfoAccess=OCSP;URI:$pki_url"
    newleaf server localhost ca "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth
$aia"
    chain server ca
    newleaf revoked localhost ca "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth
$aia"
    chain revoked ca
    newleaf other other.test ca "subjectAltName=DNS:other.test
extendedKeyUsage=serverAuth
$aia"
    chain other ca
    newleaf client ferry-client ca "extendedKeyUsage=clientAuth"
    mv "$tmp/client.crt" "$tmp/client.pem"
    newleaf client-revoked ferry-revoked ca "extendedKeyUsage=clientAuth"
    mv "$tmp/client-revoked.crt" "$tmp/client-revoked.pem"
    : >"$tmp/index.txt"
    echo 01 >"$tmp/crlnumber"
    printf '%s\n' '[ca]' 'default_ca = ca_default' '[ca_default]' \
        "database = $tmp/index.txt" "crlnumber = $tmp/crlnumber" \
        'default_md = sha256' 'default_crl_days = 3650' \
        'unique_subject = no' >"$tmp/ca.cnf"
    local ca=(-config "$tmp/ca.cnf" -keyfile "$tmp/ca.key" -cert "$tmp/ca.pem")
    run openssl ca "${ca[@]}" -valid "$tmp/server.pem"
    run openssl ca "${ca[@]}" -valid "$tmp/other.pem"
    run openssl ca "${ca[@]}" -valid "$tmp/client.pem"
    run openssl ca "${ca[@]}" -revoke "$tmp/revoked.pem"
    run openssl ca "${ca[@]}" -revoke "$tmp/client-revoked.pem"
    run openssl ca "${ca[@]}" -gencrl -out "$tmp/crl.pem"
    rm -f "$tmp/log"
}

up_to_date() {
    local f
    for f in "${files[@]}"; do
        [ -s "$out/$f" ] || return 1
    done
    openssl x509 -checkend 2592000 -noout -in "$out/server.pem" >/dev/null 2>&1
}

[ -z "$pki_url" ] && up_to_date && exit 0

mkdir -p "$out"
# Serialise concurrent runs (e.g. `make -j` running this once per target):
# lock the output directory itself, then check again under the lock.
if command -v flock >/dev/null 2>&1; then
    exec 9<"$out"
    flock 9
    [ -z "$pki_url" ] && up_to_date && exit 0
fi
# Temporary directory inside $out so the final mv is a same-filesystem rename.
tmp=$(mktemp -d "$out/.gen-certs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
umask 077

# run CMD...: run quietly; on failure show its output and stop.
run() {
    if ! "$@" >"$tmp/log" 2>&1; then
        echo "gen-certs: failed: $*" >&2
        cat "$tmp/log" >&2
        exit 1
    fi
}

# newkey NAME: ECDSA P-256 private key in PKCS#8 PEM, mode 0600.
newkey() {
    run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -out "$tmp/$1.key"
    chmod 0600 "$tmp/$1.key"
}

# newca NAME CN: self-signed CA certificate.
newca() {
    newkey "$1"
    run openssl req -x509 -new -key "$tmp/$1.key" -sha256 -days "$days" \
        -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" \
        -out "$tmp/$1.pem"
}

# newleaf NAME CN CA EXTENSIONS: leaf key + certificate signed by CA.
newleaf() {
    local name=$1 cn=$2 ca=$3 ext=$4
    newkey "$name"
    run openssl req -new -key "$tmp/$name.key" -subj "/CN=$cn" -out "$tmp/$name.csr"
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" \
        "subjectKeyIdentifier=hash" \
        "authorityKeyIdentifier=keyid,issuer" \
        "$ext" >"$tmp/$name.ext"
    # -set_serial with a random 63-bit value: no .srl file is written.
    run openssl x509 -req -in "$tmp/$name.csr" -sha256 -days "$days" \
        -CA "$tmp/$ca.pem" -CAkey "$tmp/$ca.key" \
        -set_serial "0x$(openssl rand -hex 8 | sed 's/^./7/')" \
        -extfile "$tmp/$name.ext" -out "$tmp/$name.crt"
    rm -f "$tmp/$name.csr" "$tmp/$name.ext"
}

# chain NAME CA: NAME.pem = leaf followed by the CA certificate.
chain() {
    cat "$tmp/$1.crt" "$tmp/$2.pem" >"$tmp/$1.pem"
    rm -f "$tmp/$1.crt"
}

if [ -n "$pki_url" ]; then
    rm -rf "$tmp"
    trap - EXIT
    tmp=$out
    pki
    exit 0
fi

newca ca "Ferry Development CA"

newleaf server localhost ca \
"subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
extendedKeyUsage=serverAuth"
chain server ca

newleaf other other.test ca \
"subjectAltName=DNS:other.test
extendedKeyUsage=serverAuth"
chain other ca

newleaf client ferry-client ca \
"subjectAltName=DNS:ferry-client
extendedKeyUsage=clientAuth"
mv "$tmp/client.crt" "$tmp/client.pem"

# An unrelated CA and a client certificate it signed, for rejection tests.
newca rogue-ca "Ferry Rogue Test CA"
newleaf rogue-client ferry-client rogue-ca \
"subjectAltName=DNS:ferry-client
extendedKeyUsage=clientAuth"
mv "$tmp/rogue-client.crt" "$tmp/rogue-client.pem"
rm -f "$tmp/rogue-ca.key" "$tmp/log"

# Certificates are public: make them world-readable; keys stay 0600.
chmod 0644 "$tmp"/*.pem

# Move into place; server.pem last, since it is what the freshness check reads.
for f in "${files[@]}"; do
    [ "$f" = server.pem ] || mv -f "$tmp/$f" "$out/$f"
done
mv -f "$tmp/server.pem" "$out/server.pem"

echo "gen-certs: created development certificates in $out"
