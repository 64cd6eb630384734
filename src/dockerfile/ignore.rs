//! `.dockerignore`: reading the file into patterns and matching context paths.
