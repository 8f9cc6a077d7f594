"""Code generation back ends. Each turns an IR graph into a build directory's sources."""
