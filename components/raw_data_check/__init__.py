from components.raw_data_check.component import RawDataCheck  # noqa: F401
from components.raw_data_check.checks import RawDataError  # noqa: F401
