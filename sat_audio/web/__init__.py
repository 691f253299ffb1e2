"""The live view: what the listener hears, in a browser, served by the listener itself.

view.py keeps the bounded history and pushes each chunk to connected browsers over server-sent
events; static/ is the page (plain HTML, JS and CSS, with uPlot vendored from the npm registry).
Every URL the page uses is relative, so it works under any prefix (Home Assistant's ingress).
"""
