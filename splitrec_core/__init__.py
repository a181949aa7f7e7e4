"""splitrec core: vertically federated split MMoE, with no dependency on the orchestrator."""
