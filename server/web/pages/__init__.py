"""The admin web app's pages, one module per area, each exporting an APIRouter ``router``."""
