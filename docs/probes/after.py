import os
import embedrl.models.reasoner as R
if os.environ.get("AFTER") == "1":
    def _region_parts(ref, prompt):
        regions = R.side_regions(ref, prompt)
        with_crop = R._has_region_crops(ref)
        parts = []
        for index, region in enumerate(regions, 1):
            if with_crop and region.box_2d is not None:
                parts.append({"type": "image"})
            parts.append({"type": "text", "text": " " + region.line(index, with_box=prompt.region_boxes) + "\n"})
        return parts
    R._region_parts = _region_parts
    print("AFTER layout: crop, then its mark")
