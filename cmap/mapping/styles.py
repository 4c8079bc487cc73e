"""The look of a class map in a GIS: a colour per class, a QGIS style and GDAL's attribute sidecar."""

from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

from matplotlib import colormaps


def class_colours(num_classes: int) -> list[tuple[int, int, int]]:
    """A qualitative colour per class (matplotlib's tab10 / tab20)."""
    palette = colormaps["tab10" if num_classes <= 10 else "tab20"]
    return [tuple(int(round(255 * v)) for v in palette(i % palette.N)[:3]) for i in range(num_classes)]


def qgis_style(class_names: Sequence[str]) -> str:
    """A QGIS layer style (.qml) of a paletted class map: a value, colour and label per class."""
    entries = "\n".join(
        f'        <paletteEntry value="{i}" color="#{r:02x}{g:02x}{b:02x}" alpha="255" label={quoteattr(name)}/>'
        for i, (name, (r, g, b)) in enumerate(zip(class_names, class_colours(len(class_names)), strict=True))
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28">\n  <pipe>\n'
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1">\n'
        f"      <colorPalette>\n{entries}\n      </colorPalette>\n"
        "    </rasterrenderer>\n  </pipe>\n</qgis>\n"
    )


def gdal_attributes(class_names: Sequence[str]) -> str:
    """GDAL's PAM XML of the class band: category names and a thematic raster attribute table (value,
    class, red, green, blue, alpha), one row per class. ``gdalinfo`` lists the categories; QGIS and
    ArcGIS read the table. GeoTIFF itself cannot hold either (GDAL keeps them in ``.aux.xml``)."""
    # Field types: 0 integer, 2 string. Usages: 5 min-max (the pixel value), 2 name, 6-9 red..alpha.
    fields = [("value", 0, 5), ("class", 2, 2), ("red", 0, 6), ("green", 0, 7), ("blue", 0, 8), ("alpha", 0, 9)]
    definitions = "".join(
        f'      <FieldDefn index="{i}"><Name>{name}</Name><Type>{kind}</Type><Usage>{usage}</Usage></FieldDefn>\n'
        for i, (name, kind, usage) in enumerate(fields)
    )
    rows = "".join(
        f'      <Row index="{i}"><F>{i}</F><F>{escape(name)}</F><F>{r}</F><F>{g}</F><F>{b}</F><F>255</F></Row>\n'
        for i, (name, (r, g, b)) in enumerate(zip(class_names, class_colours(len(class_names)), strict=True))
    )
    categories = "".join(f"      <Category>{escape(name)}</Category>\n" for name in class_names)
    return (
        '<PAMDataset>\n  <PAMRasterBand band="1">\n'
        f"    <CategoryNames>\n{categories}    </CategoryNames>\n"
        f'    <GDALRasterAttributeTable tableType="thematic">\n{definitions}{rows}    </GDALRasterAttributeTable>\n'
        "  </PAMRasterBand>\n</PAMDataset>\n"
    )
