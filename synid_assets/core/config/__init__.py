"""Configuration: resource profiles, the backend registry, and the models a profile needs."""
