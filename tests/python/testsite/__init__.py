"""A small Django project that uses pushnote as an app written for the original would."""
