#!/usr/bin/env bash
# A kind cluster with flageval-operator installed by its Helm chart, for users with Docker:
#   - one control-plane node and two workers labelled as accelerator nodes: nvidia/bj and ascend/bj
#     (flageval.io/chip-vendor, flageval.io/region — the labels the runner Jobs are placed by);
#   - the runner image built from runner_image/Dockerfile with the benchmark files baked in, loaded
#     into the nodes (nothing is pushed to a registry);
#   - a ReadWriteMany results volume: one host directory mounted into every node, so runner pods on
#     both workers share journals and caches;
#   - `helm upgrade --install` of charts/flageval-operator.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=flageval
IMAGE=flageval-runner:dev
RELEASE=flageval
NAMESPACE=flageval
DATASETS=${FLAGEVAL_DATA_DIR:-$ROOT/../shared/datasets}
RESULTS_DIR=${TMPDIR:-/tmp}/flageval-kind-results
BUILD=1

usage() {
  cat <<EOF
usage: hack/kind-up.sh [options]

Creates (or reuses) the kind cluster "$CLUSTER" with labelled workers, builds and loads the runner
image and installs the flageval-operator chart. Needs docker (with BuildKit), kind, kubectl and helm.

options:
  --name NAME          kind cluster name (default: $CLUSTER)
  --image IMAGE        image to build and load (default: $IMAGE)
  --datasets DIR       benchmark files baked into the image (default: \$FLAGEVAL_DATA_DIR or ../shared/datasets)
  --release NAME       Helm release (default: $RELEASE)
  --namespace NS       namespace of the release and of your Evaluations (default: $NAMESPACE)
  --results-dir DIR    host directory behind the shared results volume (default: $RESULTS_DIR)
  --no-build           use the image as it is in the local docker daemon
  -h, --help           this text

After it: kubectl -n $NAMESPACE apply -f examples/evaluation.yaml (edit the evalUrls), kubectl -n $NAMESPACE get feval -w.
Remove everything with: kind delete cluster --name $CLUSTER
EOF
}

die() {
  echo "kind-up: $*" >&2
  exit 1
}

need_value() {
  [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --name) need_value "$@"; CLUSTER=$2; shift 2 ;;
    --image) need_value "$@"; IMAGE=$2; shift 2 ;;
    --datasets) need_value "$@"; DATASETS=$2; shift 2 ;;
    --release) need_value "$@"; RELEASE=$2; shift 2 ;;
    --namespace) need_value "$@"; NAMESPACE=$2; shift 2 ;;
    --results-dir) need_value "$@"; RESULTS_DIR=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

missing=()
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[[ ${#missing[@]} -eq 0 ]] || die "missing tools: ${missing[*]} (install them and retry)"
docker info >/dev/null 2>&1 || die "the docker daemon does not answer (is it running?)"
if [[ $BUILD -eq 1 ]]; then
  [[ -d $DATASETS ]] || die "no benchmark files at $DATASETS (--datasets DIR or FLAGEVAL_DATA_DIR)"
fi

mkdir -p "$RESULTS_DIR"
chmod 0777 "$RESULTS_DIR" # runner pods write as uid 10001; a hostPath volume ignores fsGroup
RESULTS_DIR=$(cd "$RESULTS_DIR" && pwd)

# -- the cluster ------------------------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "kind-up: reusing cluster $CLUSTER"
else
  config=$(mktemp)
  trap 'rm -f "$config"' EXIT
  cat >"$config" <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
    extraMounts:
      - {hostPath: "$RESULTS_DIR", containerPath: /var/lib/flageval-results}
  - role: worker
    extraMounts:
      - {hostPath: "$RESULTS_DIR", containerPath: /var/lib/flageval-results}
EOF
  kind create cluster --name "$CLUSTER" --config "$config" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

# The runner Jobs select nodes by the lower-cased vendor of an evalInfo's chip and the region.
label_node() {
  kubectl label node "$1" --overwrite "flageval.io/chip-vendor=$2" "flageval.io/chip=$3" "flageval.io/region=$4" >/dev/null
}
label_node "$CLUSTER-worker" nvidia Nvidia-H100 bj
label_node "$CLUSTER-worker2" ascend Ascend-910B bj

# -- the image --------------------------------------------------------------------------------------
if [[ $BUILD -eq 1 ]]; then
  DOCKER_BUILDKIT=1 docker build -f "$ROOT/runner_image/Dockerfile" --build-context "datasets=$DATASETS" -t "$IMAGE" "$ROOT"
fi
kind load docker-image "$IMAGE" --name "$CLUSTER"

# -- the results volume: one host directory, mounted into both workers ---------------------------
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -f - <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $NAMESPACE-flageval-results
spec:
  capacity: {storage: 50Gi}
  accessModes: [ReadWriteMany]
  storageClassName: ""
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: /var/lib/flageval-results, type: Directory}
  claimRef: {namespace: $NAMESPACE, name: flageval-results}
EOF

# -- the chart ----------------------------------------------------------------------------------------
if [[ ${IMAGE##*/} == *:* ]]; then
  repository=${IMAGE%:*}
  tag=${IMAGE##*:}
else
  repository=$IMAGE
  tag=latest
fi
helm upgrade --install "$RELEASE" "$ROOT/charts/flageval-operator" \
  --namespace "$NAMESPACE" \
  --set-string "image.repository=$repository" \
  --set-string "image.tag=$tag" \
  --set image.pullPolicy=IfNotPresent \
  --set results.claimName=flageval-results \
  --set results.storageClassName=- \
  --set results.size=50Gi \
  --wait --timeout 5m

kubectl get nodes -L flageval.io/chip-vendor,flageval.io/region
echo
echo "kind-up: flageval-operator is running in namespace $NAMESPACE of cluster kind-$CLUSTER."
echo "  kubectl -n $NAMESPACE apply -f examples/evaluation.yaml   # edit the evalUrls first"
echo "  kubectl -n $NAMESPACE get feval -w"
