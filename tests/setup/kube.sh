# Sourced by tests/run-all: the real Kubernetes control plane for the cluster tests.
#
# Builds kube-apiserver, kube-controller-manager and etcd from Go modules (tests/k8s/build.sh;
# first run ~6 min, then reused from the cache) and fetches kubectl and helm
# (tests/k8s/kubectl-helm.sh), then exports where they are:
#   SLUICE_KUBE_BIN_DIR  directory with kube-apiserver, kube-controller-manager, etcd (read by sluice-testenv)
#   SLUICE_KUBECTL       a kubectl v1.34 binary
#   SLUICE_HELM          a helm v4 binary
# Needs Go >= 1.24 and npm. A developer can `source tests/setup/kube.sh` before `cargo test`.
_sluice_k8s=$(cd "$(dirname "${BASH_SOURCE[0]}")/../k8s" && pwd)
SLUICE_KUBE_BIN_DIR=$("$_sluice_k8s/build.sh") || { unset _sluice_k8s; return 1; }
export SLUICE_KUBE_BIN_DIR
_sluice_tools=$("$_sluice_k8s/kubectl-helm.sh") || { unset _sluice_k8s; return 1; }
export SLUICE_KUBECTL="$_sluice_tools/kubectl" SLUICE_HELM="$_sluice_tools/helm"
unset _sluice_k8s _sluice_tools
