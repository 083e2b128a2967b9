"""FAKE Kubernetes API server for the operator tests: the KMock emulator (no kube-apiserver can run
on this machine). In-memory CRUD, list and watch over real HTTP on loopback; it interprets no CRDs
(ours are declared here), assigns no uid, applies no defaults, runs no garbage collector and no
admission. Run: python kmock_server.py PORT (serves until SIGTERM)."""

import asyncio
import signal
import sys

import kmock

_CUSTOM = {
    "nettrust.io/v1alpha1/egresspolicies": ("EgressPolicy", "egresspolicy", True),
    "nettrust.io/v1alpha1/agentpools": ("AgentPool", "agentpool", False),
    "cilium.io/v2/ciliumnetworkpolicies": ("CiliumNetworkPolicy", "ciliumnetworkpolicy", True),
    "projectcalico.org/v3/networksets": ("NetworkSet", "networkset", True),
}


async def main(port: int) -> None:
    async with kmock.KubernetesEmulator() as k, kmock.Server(k, host="127.0.0.1", port=port):
        k.resources.load_bundled()
        for key, (kind, singular, namespaced) in _CUSTOM.items():
            k.resources[key] = dict(namespaced=namespaced, kind=kind, singular=singular,
                                    verbs=["get", "list", "watch", "create", "update", "patch", "delete"],
                                    shortnames=[], categories=[], subresources=["status"])
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
