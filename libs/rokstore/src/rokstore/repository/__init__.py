"""The repository layer: backends, config, packs, index, trees and records, locks, the node-local cache.

Everything the operations (snapshot, restore, check, gc, diff) build on; it imports none of them.
"""

from rokstore.repository.repository import Repository, init_repository, open_repository

__all__ = ["Repository", "init_repository", "open_repository"]
