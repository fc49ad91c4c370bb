"""Where evaluations run, behind one interface (base.Backend): this machine's processes (local) or
Evaluation objects in a Kubernetes cluster (kube). The REST layer and the CLI use them alike."""
