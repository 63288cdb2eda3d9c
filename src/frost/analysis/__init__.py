"""Studying the algorithm: the selection experiment (`selection`, `selection_plots`), Frost rounds (`rounds`), the
Appendix D samples (`samples`), scoring one move (`scoring`), infilling at inference (`infill`), reports and figures
(`report`), statistics (`stats`) and `frost experiment` (`experiment/`). Imports the top level and `frost.run`, never
`frost.tools`."""
