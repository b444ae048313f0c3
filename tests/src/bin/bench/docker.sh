#!/usr/bin/env bash
# `bench docker`'s baseline: what shiplog's docker runtime does for a setup or a
# patch of the example application, as plain `docker` commands. Same steps, same
# labels, same images and health check; no event log, no queue, no run logs.
#
#   bench-docker.sh setup|patch REPO COMMIT APP ENV WORK BASE PORT
set -euo pipefail
mode=$1 repo=$2 commit=$3 app=$4 env=$5 work=$6 base=$7 port=$8
net="bench_${app}_${env}"
labels=(--label "shiplog.application=$app" --label "shiplog.environment=$app/$env")

# Build: the repository at the commit, then the image.
dir="$work/$commit"
if [ ! -d "$dir" ]; then
    git clone --quiet --no-checkout "$repo" "$dir.partial"
    git -C "$dir.partial" checkout --quiet "$commit"
    mv "$dir.partial" "$dir"
fi
image="bench/$app/web:$commit"
docker build --quiet --label "shiplog.application=$app" --label "shiplog.build=bench" --label "shiplog.service=web" \
    --build-arg "BASE=$base" --tag "$image" "$dir" >/dev/null

# Infrastructure (setup only): the network and the volume.
if [ "$mode" = setup ]; then
    docker network create "${labels[@]}" "$net" >/dev/null
    docker volume create "${labels[@]}" "${net}_data" >/dev/null
fi

# The release command, in a one-off container.
docker run --rm --init --network "$net" --add-host host.docker.internal:host-gateway "${labels[@]}" \
    --label shiplog.task=release-migrate -e "APPLICATION=$app" -e "ENVIRONMENT=$env" -e "COMMIT=$commit" \
    --name "${net}_task_release-migrate" "$image" sh ./release.sh >/dev/null

# Roll-out: the new version beside the old, healthy, given the alias, old removed.
old=$(docker ps --quiet --filter "label=shiplog.environment=$app/$env" --filter label=shiplog.service=web)
new=$(docker run --detach --init --network "$net" --add-host host.docker.internal:host-gateway "${labels[@]}" \
    --label shiplog.service=web --label "shiplog.image=$image" -v "${net}_data:/data" -e "PORT=$port" \
    --name "${net}_web_$commit" "$image" sh -c 'exec busybox httpd -f -p $PORT -h public')
ip=$(docker inspect --format "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$new")
until exec 3<>"/dev/tcp/$ip/$port" 2>/dev/null && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && head -1 <&3 | grep -q ' 200 '; do
    sleep 0.05
done
exec 3>&-
docker network disconnect "$net" "$new"
docker network connect --alias web "$net" "$new"
docker update --restart unless-stopped "$new" >/dev/null
if [ -n "$old" ]; then
    docker stop --time 5 $old >/dev/null
    docker rm --force $old >/dev/null
fi
