"""The contract between federation parties: errors, formats, signatures, wire protocol.

Importable by every other package and importing none of them.
"""
