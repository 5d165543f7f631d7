#!/bin/sh
# Builds the small native helpers of the runc runtime into build/native/ (run by
# `npm ci` / `npm install` as the postinstall step, or `npm run build:native`):
#   taskrouter-exec   the exec wrapper inside every runc task (static: runs in any image)
#   taskrouter-mount  places image mounts into tasks whose runtime does not propagate them
#   taskrouter-pty    the terminal of a sidecar with pty_info, inside it (static)
#   taskrouter-console  the terminal side of PTY execs for runtimes with --console-socket (runsc)
#   taskrouter-spawner  starts runc execs and host pipe execs for the router (vfork, no fork of Node)
#   taskrouter-agent  the per-task exec agent: starts, feeds, logs and reaps a task's execs (static)
#   taskrouter-opentree  starts a runc task's agent with fd 3 a detached mount of its exec directory
#   taskrouter-reaper  starts runsc containers under a subreaper that reaps their sandbox at once
#   modal-sandbox-fs-tools  the filesystem helper Modal's SDKs exec in every task (static; ../shared/FS-TOOLS.md)
#   taskrouter-malloc.node  the router's malloc thresholds (a Node-API addon; built when Node's headers are found)
#   taskrouter-preallocate.node  fallocate(2) for the CLI's downloads (a Node-API addon, likewise)
#   taskrouter-aligned.node  page-aligned buffers for the CLI's O_DIRECT downloads (a Node-API addon, likewise)
#   taskrouter-h2read.node  bulk output reads received on a thread of their own (a Node-API addon on libnghttp2, likewise)
# Needs a C compiler and libc's static archive (Debian: gcc + libc6-dev), as node-pty's build does.
set -eu
cd "$(dirname "$0")/.."
CC="${CC:-cc}"
mkdir -p build/native
"$CC" -O2 -Wall -Wextra -Werror -static -o build/native/taskrouter-exec.tmp native/exec-wrapper.c
"$CC" -O2 -Wall -Wextra -Werror -static -o build/native/taskrouter-pty.tmp native/pty-holder.c
"$CC" -O2 -Wall -Wextra -Werror -o build/native/taskrouter-mount.tmp native/mount-into.c
"$CC" -O2 -Wall -Wextra -Werror -o build/native/taskrouter-console.tmp native/console-relay.c
"$CC" -O2 -Wall -Wextra -Werror -o build/native/taskrouter-spawner.tmp native/spawner.c
"$CC" -O2 -Wall -Wextra -Werror -static -o build/native/taskrouter-agent.tmp native/task-agent.c
"$CC" -O2 -Wall -Wextra -Werror -o build/native/taskrouter-opentree.tmp native/open-tree.c
"$CC" -O2 -Wall -Wextra -Werror -o build/native/taskrouter-reaper.tmp native/reaper.c
"$CC" -O2 -Wall -Wextra -Werror -static -o build/native/modal-sandbox-fs-tools.tmp \
  native/fs-tools.c native/fs-tools-watch.c
for n in exec pty mount console spawner agent opentree reaper; do
  mv "build/native/taskrouter-$n.tmp" "build/native/taskrouter-$n"
done
mv build/native/modal-sandbox-fs-tools.tmp build/native/modal-sandbox-fs-tools

# The addons need node_api.h: beside the running node (official builds, nvm) or /usr/include/node (Debian).
# Optional: a failure (another libc, new warnings in the headers) leaves the code that uses them on
# its fallback (glibc's malloc thresholds; `taskrouter cp` writes without preallocating, and
# through the page cache).
addon() { # NAME SOURCE WITHOUT [LIBS...]
  name="$1" source="$2" without="$3"
  shift 3
  if "$CC" -O2 -Wall -Wextra -shared -fPIC -I"$dir" -o "build/native/taskrouter-$name.tmp" "native/$source" "$@"; then
    mv "build/native/taskrouter-$name.tmp" "build/native/taskrouter-$name.node"
  else
    echo "native/build.sh: taskrouter-$name.node failed to build; $without" >&2
  fi
}
NODE_INCLUDE="${NODE_INCLUDE:-$(node -p 'require("path").resolve(process.execPath, "../../include/node")' 2>/dev/null || true)}"
for dir in "$NODE_INCLUDE" /usr/include/node /usr/local/include/node; do
  if [ -n "$dir" ] && [ -f "$dir/node_api.h" ]; then
    addon malloc malloc-tune.c "the router keeps glibc's malloc thresholds"
    addon preallocate preallocate.c "taskrouter cp writes files without allocating their blocks first"
    addon aligned aligned-buffer.c "taskrouter cp writes downloads through the page cache"
    addon h2read h2-read-napi.c "bulk reads go through grpc-js (needs libnghttp2-dev)" native/h2-read.c native/h2-conn.c -lnghttp2 -lpthread
    exit 0
  fi
done
echo "native/build.sh: node_api.h not found (set NODE_INCLUDE): the Node-API addons are not built; the router keeps glibc's malloc thresholds and taskrouter cp writes files without preallocating, through the page cache" >&2
