"""A plan split over two modules that both define Report_Created."""
