"""The node agent: registers this machine as a Node and runs its pods' containers as processes."""
