#!/bin/sh
# Join the mirror locks the pods of an indexed sync Job printed (sync-job.yaml) into the one
# lock an unsharded sync writes, on stdout. Each index's pod that succeeded is read (a retried
# index has failed pods too); lock merge refuses a missing or doubled shard.
set -eu
job=${1:-mirror-sync}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
count=$(kubectl get job "$job" -o jsonpath='{.spec.completions}')
i=0
while [ "$i" -lt "$count" ]; do
  pod=$(kubectl get pods -l "job-name=$job,batch.kubernetes.io/job-completion-index=$i" \
    --field-selector=status.phase=Succeeded -o name | head -n 1)
  [ -n "$pod" ] || { echo "collect.sh: no pod of index $i succeeded" >&2; exit 1; }
  kubectl logs "$pod" > "$work/shard-$i.lock.json"
  i=$((i + 1))
done
registry-tools lock merge "$work"/shard-*.lock.json
