"""The distribution's version (its own module, so that no module of the package imports the
package itself)."""

__version__ = "0.1.0"
