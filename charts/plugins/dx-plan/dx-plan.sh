#!/bin/sh
# helm dx-plan RELEASE CHART [helm template flags]: the chart rendered as helm template renders
# it, planned against the release in the cluster. Helm sets HELM_BIN and HELM_NAMESPACE.
set -eu
if [ "$#" -lt 2 ]; then
  echo "usage: helm dx-plan RELEASE CHART [helm template flags]" >&2
  exit 2
fi
release=$1
manifests=$(mktemp)
trap 'rm -f "$manifests"' EXIT
"$HELM_BIN" template "$@" --namespace "$HELM_NAMESPACE" >"$manifests"
dx-admission plan -f "$manifests" --cluster --release "$release" --namespace "$HELM_NAMESPACE"
