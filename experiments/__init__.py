"""mxjax experiments: offline model zoo, data registry, studies and their results."""
